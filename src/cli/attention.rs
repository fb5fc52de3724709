//! `dino attention`: the last block's [CLS] attention of a backbone as pictures (per head,
//! mean, 60%-mass masks, one grid per image), and its Jaccard index with the object's
//! foreground on Fashion-MNIST.
use std::path::PathBuf;

use clap::Args;
use dino_runtime::data::{fashion_mnist, pil, Dataset, Image};
use dino_runtime::model::VitModel;

use super::common::{resolve, RunOn, WeightArgs};
use crate::compiled::ForwardGraph;
use crate::eval::attention::{self, AttentionMaps};
use crate::eval::features::random_backbone;
use crate::eval::preprocess::{normalization, normalize};
use crate::eval::{Output, VitRunner, Weights};
use crate::models;
use crate::progress::Progress;

#[derive(Debug, Args)]
pub struct AttentionArgs {
    #[command(flatten)]
    pub w: WeightArgs,
    /// Images (files, or folders of images) to draw the attention of.
    #[arg(long, num_args = 1..)]
    pub image: Vec<PathBuf>,
    /// Also draw this many Fashion-MNIST test images (`--data fmnist`).
    #[arg(long, default_value_t = 0)]
    pub fmnist: usize,
    /// Fashion-MNIST's directory (default: Debian's, or $DINO_FMNIST_DIR).
    #[arg(long)]
    pub fmnist_dir: Option<PathBuf>,
    /// Output directory for the pictures.
    #[arg(long, default_value = "attention")]
    pub out: PathBuf,
    /// Resize images to SIZE x SIZE first (the reference uses 480; 0 keeps each image's own
    /// size); default: the model's native size for small-image models, 480 otherwise. Then
    /// cropped to whole patches.
    #[arg(long)]
    pub size: Option<usize>,
    /// Keep this fraction of the attention mass in the masks (in (0, 1]).
    #[arg(long, default_value_t = attention::THRESHOLD, value_parser = super::common::unit_fraction)]
    pub threshold: f32,
    /// Measure the mean Jaccard index between the masks of the mean attention and the
    /// foreground (pixels > 0) over the Fashion-MNIST test set (or its first N images).
    #[arg(long, num_args = 0..=1, default_missing_value = "10000")]
    pub jaccard: Option<usize>,
    /// Run the backbone compiled by `dino compile --graph attention` (at this --size): no
    /// graph built, no pass run at start.
    #[arg(long)]
    pub compiled: Option<PathBuf>,
    #[command(flatten)]
    pub on: RunOn,
    /// Print the Jaccard result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn expand_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let f = dino_runtime::data::ImageFolder::open(p, 3).map_err(|e| e.to_string())?;
            out.extend(f.files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such image or folder", p.display()));
        }
    }
    Ok(out)
}

struct Run<'a> {
    args: &'a AttentionArgs,
    weights: Option<Weights>,
    eps: Option<f32>,
    name: String,
}

/// What `dino attention` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JaccardResult {
    pub model: String,
    pub images: usize,
    pub threshold: f32,
    /// Mean over images of the Jaccard index of the head-mean attention mask.
    pub jaccard_mean_map: f64,
    /// Mean over images of the best head's Jaccard index.
    pub jaccard_best_head: f64,
}

/// A lower bound of the memory one attention picture of `h` x `w` px takes: the network's
/// activations, the resized image and the tiles of the grid (an image, a mean, a mask and
/// one overlay per head, enlarged to at least 224 px).
fn picture_bytes(cfg: &dino_runtime::config::VitConfig, h: usize, w: usize) -> u128 {
    let side = h.max(w) as u128;
    let scale = (224 / side.max(1)).max(1);
    let tiles = (3 + cfg.heads as u128) * (side * scale).pow(2) * 3;
    cfg.activation_bytes(h.max(w), 1, false) + side * side * 3 * 4 + tiles
}

fn draw<V: VitModel>(
    runner: &mut VitRunner<V>,
    img: &Image,
    stem: &str,
    args: &AttentionArgs,
    norm: &(Vec<f64>, Vec<f64>),
) -> Result<PathBuf, String> {
    let p = V::PATCH;
    let size = picture_size::<V>(args);
    let img = img.with_channels(V::CHANNELS);
    let resized = if size == 0 || (img.width == size && img.height == size) {
        img
    } else {
        pil::resize_bicubic(&img, size, size)
    };
    if resized.width < p || resized.height < p {
        return Err(format!("{stem}: {}x{} is smaller than one {p} px patch", resized.width, resized.height));
    }
    let (h, w) = (resized.height / p * p, resized.width / p * p);
    if size == 0 {
        let what = format!("{stem} at its own size {}x{} (--size 0)", resized.width, resized.height);
        crate::resources::check(&what, picture_bytes(&V::CONFIG, h, w)).map_err(|e| e.to_string())?;
    }
    let x = pil::crop(&resized, 0, 0, h, w);
    let out = runner.run(&[normalize(&x, &norm.0, &norm.1)], h, w).map_err(|e| e.to_string())?;
    let maps = AttentionMaps::from_weights(&out[0], h / p, w / p, p, V::REGISTERS);
    let scale = (224 / h.max(w)).max(1);
    let big = |i: &Image| attention::enlarge(i, scale);
    let mean = maps.mean();
    let keep = attention::upsample(&attention::mass_mask(&mean, args.threshold), maps.gh, maps.gw, p);
    let mut tiles = vec![
        ("image".to_string(), big(&x)),
        ("mean of heads".to_string(), big(&attention::overlay(&x, &mean, maps.gh, maps.gw, p))),
        (format!("{:.0}% of the mass", args.threshold * 100.0), big(&attention::masked(&x, &keep))),
    ];
    let save = |img: &Image, suffix: &str| {
        img.save_png(&args.out.join(format!("{stem}-{suffix}.png"))).map_err(|e| e.to_string())
    };
    save(&tiles[1].1, "mean")?;
    save(&tiles[2].1, "mask")?;
    for (i, head) in maps.heads.iter().enumerate() {
        let o = big(&attention::overlay(&x, head, maps.gh, maps.gw, p));
        save(&o, &format!("head{i}"))?;
        tiles.push((format!("head {i}"), o));
    }
    let grid = args.out.join(format!("{stem}-grid.png"));
    let columns = if tiles.len() <= 9 { tiles.len() } else { 6 };
    attention::grid(&grid, &tiles, columns).map_err(|e| e.to_string())?;
    Ok(grid)
}

/// The side images are resized to: --size, else the native size of a small-image model, else
/// 480 (the reference's).
fn picture_size<V: VitModel>(a: &AttentionArgs) -> usize {
    a.size.unwrap_or(if V::IMAGE < 224 { V::IMAGE } else { 480 })
}

/// Mean Jaccard of attention masks with the foreground over Fashion-MNIST test images.
fn jaccard<V: VitModel>(
    runner: &mut VitRunner<V>,
    test: &dyn Dataset,
    n: usize,
    threshold: f32,
    norm: &(Vec<f64>, Vec<f64>),
) -> Result<(f64, f64), String> {
    let (p, size) = (V::PATCH, V::IMAGE);
    let n = n.min(test.len());
    let (mut sum_mean, mut sum_best) = (0.0, 0.0);
    let mut bar = Progress::new("jaccard", n as u64, false);
    let mut start = 0;
    while start < n {
        let end = (start + runner.fixed_batch().unwrap_or(256)).min(n);
        let imgs: Vec<Image> =
            (start..end).map(|i| test.load(i)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        let xs: Vec<Vec<f32>> =
            imgs.iter().map(|im| normalize(&im.with_channels(V::CHANNELS), &norm.0, &norm.1)).collect();
        let out = runner.run(&xs, size, size).map_err(|e| e.to_string())?;
        for (im, a) in imgs.iter().zip(&out) {
            let maps = AttentionMaps::from_weights(a, size / p, size / p, p, V::REGISTERS);
            let fg: Vec<bool> = im.to_luma().data.iter().map(|v| *v > 0).collect();
            let score = |m: &[f32]| {
                attention::jaccard(
                    &attention::upsample(&attention::mass_mask(m, threshold), size / p, size / p, p),
                    &fg,
                )
            };
            sum_mean += score(&maps.mean());
            sum_best += maps.heads.iter().map(|h| score(h)).fold(0.0, f64::max);
        }
        start = end;
        bar.set(end as u64, String::new);
    }
    bar.finish();
    Ok((sum_mean / n as f64, sum_best / n as f64))
}

impl models::VitVisitor for Run<'_> {
    type Output = Result<Option<JaccardResult>, String>;

    fn visit<V: VitModel>(self, _: &'static str) -> Self::Output {
        let a = self.args;
        if let Some(s) = a.size.filter(|&s| s > 0) {
            crate::resources::check(&format!("--size {s}"), picture_bytes(&V::CONFIG, s, s))
                .map_err(|e| e.to_string())?;
        }
        let weights = match self.weights {
            Some(w) => w,
            None => random_backbone::<V>(a.w.seed),
        };
        let mut runner = match &a.compiled {
            Some(path) => {
                let size = picture_size::<V>(a);
                crate::compiled::load_forward::<V>(path, ForwardGraph::Attention, self.eps, size, a.on.device)
            }
            None => VitRunner::<V>::new(Output::Attention, self.eps, a.on.device),
        }
        .map_err(|e| e.to_string())?;
        runner.set_weights(&weights).map_err(|e| e.to_string())?;
        let norm = normalization(&self.name);
        std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
        let files = expand_images(&a.image)?;
        for f in &files {
            let img = Image::open(f, 3).map_err(|e| e.to_string())?;
            let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
            let g = draw(&mut runner, &img, &stem, a, &norm)?;
            println!("{} -> {}", f.display(), g.display());
        }
        let needs_fmnist = a.fmnist > 0 || a.jaccard.is_some();
        let fm =
            if needs_fmnist { Some(fashion_mnist(a.fmnist_dir.as_deref()).map_err(|e| e.to_string())?) } else { None };
        if let Some(fm) = &fm {
            for i in 0..a.fmnist.min(fm.test.len()) {
                let img = fm.test.load(i).map_err(|e| e.to_string())?;
                let g = draw(&mut runner, &img, &format!("fmnist-test-{i}"), a, &norm)?;
                println!(
                    "fashion-mnist test image {i} ({}) -> {}",
                    fm.test.classes()[fm.test.label(i).unwrap_or(0)],
                    g.display()
                );
            }
        }
        match (a.jaccard, &fm) {
            (Some(n), Some(fm)) => {
                let (jm, jb) = jaccard(&mut runner, &fm.test, n, a.threshold, &norm)?;
                Ok(Some(JaccardResult {
                    model: self.name.clone(),
                    images: n.min(fm.test.len()),
                    threshold: a.threshold,
                    jaccard_mean_map: jm,
                    jaccard_best_head: jb,
                }))
            }
            _ => Ok(None),
        }
    }
}

pub fn run(args: AttentionArgs) -> Result<(), String> {
    args.on.apply()?;
    if args.image.is_empty() && args.fmnist == 0 && args.jaccard.is_none() {
        return Err("nothing to do: give --image PATH..., --fmnist N or --jaccard".into());
    }
    let (weights, eps, name) = resolve(&args.w)?;
    let what = match (&args.w.checkpoint, &args.w.weights) {
        (Some(p), _) | (_, Some(p)) => p.display().to_string(),
        _ => format!("random init (seed {})", args.w.seed),
    };
    let r = models::with_vit(&name, Run { args: &args, weights, eps, name: name.clone() }).ok_or_else(|| {
        format!("no backbone or DINO preset named `{name}`; choose one of {}", models::vit_names().join(", "))
    })??;
    if let Some(j) = r {
        if args.json {
            println!("{}", serde_json::json!({"weights": what, "result": j}));
        } else {
            println!(
                "Jaccard of the {:.0}%-mass attention masks with the foreground, {} Fashion-MNIST test images, {what}: \
                 mean-of-heads map {:.4}, best head {:.4}",
                j.threshold * 100.0,
                j.images,
                j.jaccard_mean_map,
                j.jaccard_best_head
            );
        }
    }
    Ok(())
}
