//! Weighted k-NN as the trainer and `dino knn` run it (DINO's `eval_knn.py`): [CLS] features
//! of the train and test splits through an [`Extractor`] on any device, L2-normalized, then
//! [`weighted_knn`]; and the raw-pixel baseline a DINO backbone must beat.
//!
//! In a data-parallel run the ranks share the work ([`knn_eval_ranks`]):
//!
//! ```text
//!   rank r: features of its slice of train ──all-gather (rank order = dataset order)──► every train feature
//!           features of its slice of test  ──────────────► votes of its test images ──all-reduce──► hits
//! ```
use dino_runtime::config::AugmentConfig;
use dino_runtime::data::{Dataset, Image};
use dino_runtime::dist::{self, Collective, Solo};
use dino_runtime::model::DinoModel;
use dino_runtime::{Error, Result};

use super::knn::{accuracies, knn_hits, l2_normalize, weighted_knn, KnnResult, KS, TEMPERATURE};
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
    knn_eval_ranks(ex, weights, train, test, quiet, &Solo::default())
}

/// [`knn_eval`] shared by the ranks of `group` (see the module documentation): every rank
/// gets the same results, equal to one rank's.
pub fn knn_eval_ranks<M: DinoModel>(
    ex: &mut Extractor<M>,
    weights: &Weights,
    train: &dyn Dataset,
    test: &dyn Dataset,
    quiet: bool,
    group: &dyn Collective,
) -> Result<Vec<KnnResult>> {
    ex.set_weights(weights)?;
    let mut feats = vec![];
    for (name, ds) in [("train feats", train), ("test feats", test)] {
        let shard = Shard::of(ds, group.rank(), group.world());
        let mut p = Progress::new(name, shard.len() as u64, quiet);
        let mut f = ex.features(&shard, |done, _| p.set(done as u64, String::new))?;
        p.finish();
        for b in &f.skipped {
            p.println(&format!("warning: skipped unreadable image {}: {}", b.source, b.why));
        }
        f.indices.iter_mut().for_each(|i| *i += shard.start);
        l2_normalize(&mut f.data, f.dim);
        feats.push(f);
    }
    let test_part = feats.pop().expect("test features");
    let train_all = gather(group, "the k-NN train features", feats.pop().expect("train features"))?;
    let unlabeled = || Error::Config { what: "k-NN".into(), why: "needs labeled train and test images".into() };
    let (ytr, yte) = (train_all.all_labels().ok_or_else(unlabeled)?, test_part.all_labels().ok_or_else(unlabeled)?);
    let hits =
        knn_hits(&train_all.data, &ytr, &test_part.data, &yte, train_all.dim, train.classes().len(), &KS, TEMPERATURE);
    // counts (exact in f32 below 2^24) summed over the ranks, with the number of test images
    let mut sums: Vec<f32> = hits.iter().flat_map(|&(a, b)| [a as f32, b as f32]).chain([yte.len() as f32]).collect();
    group.all_reduce_sum("the k-NN hit counts", &mut sums)?;
    let hits: Vec<(usize, usize)> = sums.chunks(2).take(KS.len()).map(|c| (c[0] as usize, c[1] as usize)).collect();
    Ok(accuracies(&KS, &hits, sums[2 * KS.len()] as usize))
}

/// Rank `rank`'s contiguous slice of a dataset (of `ranks`, as even as can be).
struct Shard<'a> {
    inner: &'a dyn Dataset,
    start: usize,
    len: usize,
}

impl<'a> Shard<'a> {
    fn of(inner: &'a dyn Dataset, rank: usize, ranks: usize) -> Shard<'a> {
        let n = inner.len();
        let start = n * rank / ranks;
        Shard { inner, start, len: n * (rank + 1) / ranks - start }
    }
}

impl Dataset for Shard<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn load(&self, i: usize) -> Result<Image> {
        self.inner.load(self.start + i)
    }
    fn label(&self, i: usize) -> Option<usize> {
        self.inner.label(self.start + i)
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn source(&self, i: usize) -> String {
        self.inner.source(self.start + i)
    }
}

/// Every rank's features, concatenated in rank order (the rows, their dataset indices and
/// labels; the skipped images stay with the rank that reported them).
fn gather(group: &dyn Collective, what: &str, f: Features) -> Result<Features> {
    if group.world() == 1 {
        return Ok(f);
    }
    // the rows as f32; per row its index and label (-1: none) as i64
    let meta: Vec<u8> = f
        .indices
        .iter()
        .zip(&f.labels)
        .flat_map(|(&i, l)| [i as i64, l.map_or(-1, |l| l as i64)])
        .flat_map(i64::to_le_bytes)
        .collect();
    let rows = dist::all_gather_f32(group, what, &f.data)?;
    let metas = group.all_gather_bytes(what, &meta)?;
    let mut all = Features { dim: f.dim, skipped: f.skipped, ..Default::default() };
    for (r, m) in rows.into_iter().zip(metas) {
        all.data.extend(r);
        for pair in m.chunks_exact(16) {
            let num = |b: &[u8]| i64::from_le_bytes(b.try_into().expect("8 bytes"));
            all.indices.push(num(&pair[..8]) as usize);
            all.labels.push(usize::try_from(num(&pair[8..])).ok());
        }
    }
    Ok(all)
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
