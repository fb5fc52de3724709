//! Weighted k-NN as the trainer and `dino knn` run it (DINO's `eval_knn.py`): [CLS] features
//! of the train and test splits through an [`Extractor`] on any device, L2-normalized, then
//! [`weighted_knn`]; and the raw-pixel baseline a DINO backbone must beat.
use dino_runtime::config::AugmentConfig;
use dino_runtime::data::Dataset;
use dino_runtime::model::DinoModel;
use dino_runtime::{Error, Result};

use super::knn::{l2_normalize, weighted_knn, KnnResult, KS, TEMPERATURE};
use super::{features, Extractor, Features, Weights};
use crate::progress::Progress;

/// Weighted k-NN of a backbone's features (`weights` loaded into `ex`): train split against
/// the test split. Unreadable images are skipped and listed.
pub fn knn_eval<M: DinoModel>(
    ex: &mut Extractor<M>,
    weights: &Weights,
    train: &dyn Dataset,
    test: &dyn Dataset,
    quiet: bool,
) -> Result<Vec<KnnResult>> {
    ex.set_weights(weights)?;
    let mut feats = vec![];
    for (name, ds) in [("train feats", train), ("test feats", test)] {
        let mut p = Progress::new(name, ds.len() as u64, quiet);
        let mut f = ex.features(ds, |done, _| p.set(done as u64, String::new))?;
        p.finish();
        for b in &f.skipped {
            p.println(&format!("warning: skipped unreadable image {}: {}", b.source, b.why));
        }
        l2_normalize(&mut f.data, f.dim);
        feats.push(f);
    }
    knn_of(&feats[0], &feats[1], train.classes().len())
}

/// k-NN between two L2-normalized feature sets (both must be labeled).
pub fn knn_of(train: &Features, test: &Features, classes: usize) -> Result<Vec<KnnResult>> {
    let unlabeled = || Error::Config { what: "k-NN".into(), why: "needs labeled train and test images".into() };
    let (ytr, yte) = (train.all_labels().ok_or_else(unlabeled)?, test.all_labels().ok_or_else(unlabeled)?);
    Ok(weighted_knn(&train.data, &ytr, &test.data, &yte, train.dim, classes, &KS, TEMPERATURE))
}

/// k-NN of the raw (normalized, `size` px) pixels: the baseline.
pub fn raw_pixel_knn(
    train: &dyn Dataset,
    test: &dyn Dataset,
    size: usize,
    channels: usize,
    aug: &AugmentConfig,
) -> Result<Vec<KnnResult>> {
    let mut f = [train, test].map(|d| features::raw_pixels(d, size, channels, aug));
    for x in &mut f {
        l2_normalize(&mut x.data, x.dim);
    }
    knn_of(&f[0], &f[1], train.classes().len())
}

/// `k=20 top-1 66.1% top-5 ... | k=10 ...`, k=20 first.
pub fn format_knn(r: &[KnnResult]) -> String {
    let mut v: Vec<&KnnResult> = r.iter().collect();
    v.sort_by_key(|x| (x.k != 20, x.k));
    v.iter().map(|x| format!("k={} top-1 {:.2}% top-5 {:.2}%", x.k, x.top1, x.top5)).collect::<Vec<_>>().join(" | ")
}
