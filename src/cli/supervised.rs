//! `dino supervised`: the supervised baseline (backbone + linear classifier trained with
//! labels on Fashion-MNIST), for the attention-map comparison.
use std::path::PathBuf;

use clap::Args;
use dino_runtime::model::VitModel;

use crate::dataset::{self, DataSpec};
use crate::models;
use crate::train::supervised::{train_supervised, SupervisedOptions, SupervisedReport};

#[derive(Debug, Args)]
pub struct SupervisedArgs {
    /// The backbone (or the DINO preset whose backbone) to train.
    #[arg(long, default_value = "fmnist-small")]
    pub model: String,
    /// `fmnist` or `fmnist:DIR` (10 labeled classes).
    #[arg(long, default_value = "fmnist")]
    pub data: DataSpec,
    /// Where to write the weights (official names plus `head.*`; loadable with --weights).
    #[arg(long, default_value = "runs/supervised/backbone.safetensors")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2, value_parser = crate::train::hyper::positive)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64, value_parser = crate::train::hyper::positive)]
    pub batch_size: usize,
    /// Peak AdamW learning rate, after a linear warmup, then cosine to 1e-6.
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.5)]
    pub warmup_epochs: f64,
    #[arg(long, default_value_t = 0.05)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on this many images only.
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub on: super::common::RunOn,
}

struct Go<'a>(&'a SupervisedArgs);

impl models::VitVisitor for Go<'_> {
    type Output = Result<SupervisedReport, String>;
    fn visit<V: VitModel>(self, _: &'static str) -> Self::Output {
        let a = self.0;
        let s = dataset::open(&a.data, V::CHANNELS, None, a.limit, None).map_err(|e| e.to_string())?;
        let test = s.test.ok_or("supervised training evaluates on Fashion-MNIST's test split: use --data fmnist")?;
        let (mean, std) = crate::eval::preprocess::normalization(&a.model);
        let o = SupervisedOptions {
            epochs: a.epochs,
            batch: a.batch_size,
            lr: a.lr,
            warmup_epochs: a.warmup_epochs,
            weight_decay: a.weight_decay,
            seed: a.seed,
            mean,
            std,
            quiet: false,
            device: a.on.device,
        };
        if let Some(dir) = a.out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        train_supervised::<V>(s.train.as_ref(), test.as_ref(), &o, &a.out).map_err(|e| e.to_string())
    }
}

pub fn run(args: SupervisedArgs) -> Result<(), String> {
    args.on.apply()?;
    let r = models::with_vit(&args.model, Go(&args)).ok_or_else(|| {
        format!("no backbone named `{}`; choose one of {}", args.model, models::vit_names().join(", "))
    })??;
    println!(
        "supervised {}: {} iterations at {:.1} images/s, final loss {:.4}, test top-1 {:.2}%; weights in {}",
        args.model,
        r.iterations,
        r.images_per_s,
        r.final_loss,
        r.test_top1,
        args.out.display()
    );
    Ok(())
}
