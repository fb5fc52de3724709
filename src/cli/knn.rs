//! `dino knn`: weighted k-NN accuracy of a checkpoint's teacher (or of a random
//! initialization), with the raw-pixel baseline beside it.
use std::path::PathBuf;

use clap::Args;
use dino_runtime::model::DinoModel;

use crate::dataset::{self, DataSpec};
use crate::eval::knn_eval::{format_knn, knn_eval, raw_pixel_knn};
use crate::eval::{self, Extractor, KnnResult};
use crate::progress::Progress;
use crate::train::{checkpoint, RunConfig};

#[derive(Debug, Args)]
pub struct KnnArgs {
    /// A training checkpoint (its teacher is evaluated, as DINO's eval_knn.py does).
    #[arg(long, conflicts_with = "random_init")]
    pub checkpoint: Option<PathBuf>,
    /// Evaluate the model's random initialization instead (the student's, for --seed).
    #[arg(long)]
    pub random_init: bool,
    /// The DINO preset [default: the checkpoint's, else fmnist-small].
    #[arg(long)]
    pub model: Option<String>,
    /// `fmnist`, `fmnist:DIR` or a labeled image folder (the training set of the k-NN)
    /// [default: the checkpoint's, else fmnist].
    #[arg(long)]
    pub data: Option<DataSpec>,
    /// A labeled image folder to classify (Fashion-MNIST brings its test split).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Seed of --random-init.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use this many training images only.
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub limit: Option<usize>,
    /// Classify this many test images only.
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub test_limit: Option<usize>,
    /// Skip the raw-pixel baseline.
    #[arg(long)]
    pub no_raw: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256, value_parser = crate::train::hyper::positive)]
    pub batch: usize,
    #[command(flatten)]
    pub on: super::common::RunOn,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

struct Eval<'a>(&'a KnnArgs, Option<eval::Weights>, DataSpec);

impl crate::models::DinoVisitor for Eval<'_> {
    type Output = Result<(Vec<KnnResult>, Option<Vec<KnnResult>>, usize, usize), String>;

    fn visit<M: DinoModel>(self, _: &'static str) -> Self::Output {
        let Eval(args, weights, data) = self;
        let cfg = M::CONFIG;
        let s = dataset::open(&data, cfg.backbone.channels, args.val.as_deref(), args.limit, args.test_limit)
            .map_err(|e| e.to_string())?;
        let test = s.test.ok_or("k-NN needs a labeled test split: use fmnist, or give --val")?;
        let weights = weights.unwrap_or_else(|| eval::features::random_init::<M>(args.seed));
        let mut ex = Extractor::<M>::new(args.batch, args.on.device).map_err(|e| e.to_string())?;
        let r = knn_eval(&mut ex, &weights, s.train.as_ref(), test.as_ref(), false).map_err(|e| e.to_string())?;
        let raw = if args.no_raw {
            None
        } else {
            let p = Progress::new("raw pixels", 1, false);
            let (size, channels) = (cfg.global.size, cfg.backbone.channels);
            let r = raw_pixel_knn(s.train.as_ref(), test.as_ref(), size, channels, &cfg.augment);
            p.finish();
            Some(r.map_err(|e| e.to_string())?)
        };
        Ok((r, raw, s.train.len(), test.len()))
    }
}

pub fn run(args: KnnArgs) -> Result<(), String> {
    args.on.apply()?;
    let (weights, saved): (Option<eval::Weights>, Option<RunConfig>) = match &args.checkpoint {
        Some(path) => {
            let (f, meta) = checkpoint::load(path).map_err(|e| e.to_string())?;
            let run: Option<RunConfig> = serde_json::from_value(meta.run.clone()).ok();
            (Some(checkpoint::teacher_weights(&f)), run)
        }
        None if args.random_init => (None, None),
        None => return Err("give --checkpoint PATH, or --random-init".into()),
    };
    let model =
        args.model.clone().or(saved.as_ref().map(|r| r.preset.clone())).unwrap_or_else(|| "fmnist-small".into());
    let data = args.data.clone().or(saved.as_ref().map(|r| r.data.clone())).unwrap_or(DataSpec::Fmnist(None));
    let (r, raw, ntrain, ntest) = crate::models::with_dino(&model, Eval(&args, weights, data)).ok_or_else(|| {
        format!("no DINO preset named `{model}`; choose one of {}", crate::models::dino_names().join(", "))
    })??;
    let what = match &args.checkpoint {
        Some(p) => format!("teacher of {}", p.display()),
        None => format!("{model} at random init (seed {})", args.seed),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"model": model, "what": what, "train": ntrain, "test": ntest, "knn": r, "raw_pixels": raw})
        );
        return Ok(());
    }
    println!("weighted k-NN (T = 0.07, cosine similarity), {ntrain} training / {ntest} test images");
    println!("  {:<40} {}", what, format_knn(&r));
    if let Some(raw) = raw {
        println!("  {:<40} {}", "raw pixels", format_knn(&raw));
    }
    Ok(())
}
