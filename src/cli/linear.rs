//! `dino linear`: the linear probe of frozen features (DINO's `eval_linear.py`, scaled down).
use clap::Args;
use dino_runtime::model::VitModel;

use super::common::{resolve, WeightArgs};
use crate::dataset::{self, DataSpec};
use crate::eval::features::random_backbone;
use crate::eval::linear::{linear_probe, LinearOptions, LinearReport};
use crate::eval::preprocess::normalization;
use crate::eval::vit_runner::dataset_features;
use crate::eval::{Output, VitRunner, Weights};
use crate::models;

#[derive(Debug, Args)]
pub struct LinearArgs {
    #[command(flatten)]
    pub w: WeightArgs,
    /// `fmnist` or a labeled image folder (then --val).
    #[arg(long, default_value = "fmnist")]
    pub data: DataSpec,
    #[arg(long)]
    pub val: Option<std::path::PathBuf>,
    /// Epochs of the classifier (the reference trains 100).
    #[arg(long, default_value_t = 30, value_parser = crate::train::hyper::positive)]
    pub epochs: usize,
    #[arg(long, default_value_t = 256, value_parser = crate::train::hyper::positive)]
    pub batch_size: usize,
    /// SGD learning rate for a batch of 256 (scaled linearly with --batch-size). The
    /// reference's 0.001 is tuned for ImageNet and 100 epochs with augmentation; on the
    /// precomputed features of small models 0.1 trains in far fewer epochs.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// [CLS] tokens of this many last blocks [default: 4, or 1 with the mean patch token for
    /// ViT-B as the reference].
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub n_last_blocks: Option<usize>,
    /// Use the final [CLS] token and the mean patch token.
    #[arg(long)]
    pub avgpool: bool,
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub limit: Option<usize>,
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub test_limit: Option<usize>,
    #[command(flatten)]
    pub on: super::common::RunOn,
    #[arg(long)]
    pub json: bool,
}

struct Go<'a>(&'a LinearArgs, Option<Weights>, Option<f32>, String);

impl models::VitVisitor for Go<'_> {
    type Output = Result<LinearReport, String>;
    fn visit<V: VitModel>(self, _: &'static str) -> Self::Output {
        let Go(a, weights, eps, name) = self;
        let s =
            dataset::open(&a.data, V::CHANNELS, a.val.as_deref(), a.limit, a.test_limit).map_err(|e| e.to_string())?;
        let test = s.test.ok_or("the probe needs a labeled test split: use fmnist, or give --val")?;
        let base = V::DIM >= 768;
        let output = match (a.avgpool || (base && a.n_last_blocks.is_none()), a.n_last_blocks) {
            (true, _) => Output::ClsAndPatchMean,
            (false, n) => Output::LastCls(n.unwrap_or(4)),
        };
        let mut runner = VitRunner::<V>::new(output, eps, a.on.device).map_err(|e| e.to_string())?;
        runner.set_weights(&weights.unwrap_or_else(|| random_backbone::<V>(a.w.seed))).map_err(|e| e.to_string())?;
        let (mean, std) = normalization(&name);
        let tr = dataset_features(&mut runner, s.train.as_ref(), V::IMAGE, &mean, &std, "train feats", false)
            .map_err(|e| e.to_string())?;
        let te = dataset_features(&mut runner, test.as_ref(), V::IMAGE, &mean, &std, "test feats", false)
            .map_err(|e| e.to_string())?;
        let unlabeled = || "the probe needs labels for every image".to_string();
        let (ytr, yte) = (tr.all_labels().ok_or_else(unlabeled)?, te.all_labels().ok_or_else(unlabeled)?);
        let o = LinearOptions {
            epochs: a.epochs,
            batch: a.batch_size,
            lr: a.lr,
            seed: a.w.seed,
            quiet: false,
            device: a.on.device,
        };
        linear_probe(&tr.data, &ytr, &te.data, &yte, tr.dim, s.train.classes().len(), &o).map_err(|e| e.to_string())
    }
}

pub fn run(args: LinearArgs) -> Result<(), String> {
    args.on.apply()?;
    let (weights, eps, name) = resolve(&args.w)?;
    let r = models::with_vit(&name, Go(&args, weights, eps, name.clone()))
        .ok_or_else(|| format!("no backbone or DINO preset named `{name}`"))??;
    if args.json {
        println!("{}", serde_json::json!({"model": name, "result": r}));
    } else {
        println!(
            "linear probe on {}-d frozen features ({} epochs): final test top-1 {:.2}%, best {:.2}%",
            r.feature_dim, args.epochs, r.final_top1, r.best_top1
        );
    }
    Ok(())
}
