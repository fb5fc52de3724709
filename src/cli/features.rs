//! `dino features`: export a backbone's features of a dataset for use elsewhere: `.npy`
//! (with an `.images.txt` list beside it) or `.safetensors` (`features`, `labels`, and the
//! image list in the metadata).
use std::path::{Path, PathBuf};

use clap::Args;
use dino_runtime::model::VitModel;
use dino_runtime::tensors::TensorFile;

use super::common::{resolve, WeightArgs};
use crate::compiled::ForwardGraph;
use crate::dataset::{self, DataSpec};
use crate::eval::features::random_backbone;
use crate::eval::preprocess::normalization;
use crate::eval::vit_runner::dataset_features;
use crate::eval::{Features, Output, VitRunner, Weights};
use crate::models;

#[derive(Debug, Args)]
pub struct FeaturesArgs {
    #[command(flatten)]
    pub w: WeightArgs,
    /// `fmnist`, `fmnist:DIR` or an image folder.
    #[arg(long)]
    pub data: DataSpec,
    /// Fashion-MNIST's split to export: train or test.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Output file: `.npy` or `.safetensors`.
    #[arg(long)]
    pub out: PathBuf,
    /// Export every final token (`n x tokens x dim`) instead of the [CLS] token.
    #[arg(long)]
    pub patch_tokens: bool,
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub limit: Option<usize>,
    /// Resize (and center-crop) images to SIZE x SIZE, a whole number of patches [default: the
    /// model's native size]; the position embeddings are interpolated as DINO's evaluation does.
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub size: Option<usize>,
    /// Run the backbone compiled by `dino compile --graph features` (or `tokens` with
    /// --patch-tokens) at this --size: no graph built, no pass run at start.
    #[arg(long)]
    pub compiled: Option<PathBuf>,
    #[command(flatten)]
    pub on: super::common::RunOn,
}

/// A little-endian float32 `.npy` array, written atomically.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> dino_runtime::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    dino_runtime::files::write_atomic_with(path, |f| {
        f.write_all(b"\x93NUMPY\x01\x00")?;
        f.write_all(&(header.len() as u16).to_le_bytes())?;
        f.write_all(header.as_bytes())?;
        for v in data {
            f.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    })
}

struct Go<'a>(&'a FeaturesArgs, Option<Weights>, Option<f32>, String);

impl models::VitVisitor for Go<'_> {
    type Output = Result<(Features, Vec<String>, usize), String>;
    fn visit<V: VitModel>(self, _: &'static str) -> Self::Output {
        let Go(a, weights, eps, name) = self;
        let size = a.size.unwrap_or(V::IMAGE);
        let p = V::PATCH;
        if size % p != 0 || size < p {
            let near = (size / p).max(1) * p;
            return Err(format!(
                "--size {size}: the model's patches are {p} px, so the size must be a multiple of {p} (e.g. {near})"
            ));
        }
        let tokens = if a.patch_tokens { (size / p).pow(2) as u128 + 1 } else { 1 };
        let s = dataset::open(&a.data, V::CHANNELS, None, a.limit, a.limit).map_err(|e| e.to_string())?;
        let ds = match a.split.as_str() {
            "train" => s.train,
            "test" => s.test.ok_or("--split test needs Fashion-MNIST")?,
            other => return Err(format!("--split {other}: use train or test")),
        };
        let output = if a.patch_tokens { Output::Tokens } else { Output::LastCls(1) };
        let needs = V::CONFIG.activation_bytes(size, 256, false) + 4 * ds.len() as u128 * tokens * V::DIM as u128;
        crate::resources::check(&format!("--size {size} over {} images", ds.len()), needs)
            .map_err(|e| e.to_string())?;
        let mut runner = match &a.compiled {
            Some(path) => {
                let graph = if a.patch_tokens { ForwardGraph::Tokens } else { ForwardGraph::Features };
                crate::compiled::load_forward::<V>(path, graph, eps, size, a.on.device)
            }
            None => VitRunner::<V>::new(output, eps, a.on.device),
        }
        .map_err(|e| e.to_string())?;
        runner.set_weights(&weights.unwrap_or_else(|| random_backbone::<V>(a.w.seed))).map_err(|e| e.to_string())?;
        let (mean, std) = normalization(&name);
        let f = dataset_features(&mut runner, ds.as_ref(), size, &mean, &std, "features", false)
            .map_err(|e| e.to_string())?;
        let sources = f.indices.iter().map(|&i| ds.source(i)).collect();
        Ok((f, sources, V::DIM))
    }
}

pub fn run(args: FeaturesArgs) -> Result<(), String> {
    args.on.apply()?;
    let ext = args.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "npy" | "safetensors") {
        // said before any work is done
        return Err(format!("--out {}: the output must end in .npy or .safetensors", args.out.display()));
    }
    let (weights, eps, name) = resolve(&args.w)?;
    let (f, sources, dim) = models::with_vit(&name, Go(&args, weights, eps, name.clone()))
        .ok_or_else(|| format!("no backbone or DINO preset named `{name}`"))??;
    let n = f.rows();
    let shape = if args.patch_tokens { vec![n, f.dim / dim, dim] } else { vec![n, f.dim] };
    let io = |e: std::io::Error| format!("{}: {e}", args.out.display());
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match ext {
        "npy" => {
            write_npy(&args.out, &shape, &f.data).map_err(|e| e.to_string())?;
            let list = args.out.with_extension("images.txt");
            let lines: Vec<String> = sources
                .iter()
                .zip(&f.labels)
                .map(|(s, l)| match l {
                    Some(l) => format!("{s}\t{l}"),
                    None => s.clone(),
                })
                .collect();
            dino_runtime::files::write_atomic(&list, (lines.join("\n") + "\n").as_bytes())
                .map_err(|e| e.to_string())?;
            println!(
                "{n} x {:?} features -> {} (images and labels in {})",
                &shape[1..],
                args.out.display(),
                list.display()
            );
        }
        "safetensors" => {
            let mut t = TensorFile::default();
            t.insert("features", &shape, f.data.clone());
            if let Some(labels) = f.all_labels() {
                t.insert("labels", &[n], labels.iter().map(|&l| l as f32).collect());
            }
            t.metadata.insert("images".into(), serde_json::to_string(&sources).expect("json"));
            t.metadata.insert("model".into(), name);
            t.save(&args.out).map_err(|e| e.to_string())?;
            println!("{n} x {:?} features -> {}", &shape[1..], args.out.display());
        }
        _ => return Err(format!("{}: the output must end in .npy or .safetensors", args.out.display())),
    }
    if !f.skipped.is_empty() {
        println!("{} unreadable image(s) skipped (listed above)", f.skipped.len());
    }
    Ok(())
}
