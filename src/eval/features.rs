//! [CLS] features of whole images (no augmentation), from a backbone's weights.
use std::collections::BTreeMap;

use dino_runtime::config::AugmentConfig;
use dino_runtime::data::loader::BadImage;
use dino_runtime::data::multicrop::eval_view;
use dino_runtime::data::{Dataset, Image};
use dino_runtime::graph::data;
use dino_runtime::model::DinoModel;
use dino_runtime::nn::ParamSet;
use dino_runtime::tensors::NamedTensor;
use dino_runtime::{Error, Result};
use luminal::prelude::*;
use rayon::prelude::*;

use super::{Output, VitRunner};

/// Parameter values by name (`backbone.blocks.0.norm1.weight`, ...).
pub type Weights = BTreeMap<String, NamedTensor>;

/// Features of the readable images of a dataset.
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub dim: usize,
    /// `rows x dim`.
    pub data: Vec<f32>,
    /// Dataset index of each row.
    pub indices: Vec<usize>,
    /// Label of each row, when the dataset has labels.
    pub labels: Vec<Option<usize>>,
    /// Images that could not be read (not in `data`).
    pub skipped: Vec<BadImage>,
}

impl Features {
    pub fn rows(&self) -> usize {
        self.indices.len()
    }

    /// Labels of every row, or `None` if some row has none.
    pub fn all_labels(&self) -> Option<Vec<usize>> {
        self.labels.iter().copied().collect()
    }
}

/// `ToTensor` + `Normalize` of one image at `size`, CHW (DINO's evaluation preprocessing).
pub fn eval_tensor(img: &Image, size: usize, channels: usize, mean: &[f64], std: &[f64]) -> Vec<f32> {
    let x = eval_view(&img.with_channels(channels), size);
    let n = size * size;
    let mut out = vec![0f32; channels * n];
    for ch in 0..channels {
        let (m, s) = (mean[ch % mean.len()] as f32, std[ch % std.len()] as f32);
        for i in 0..n {
            out[ch * n + i] = (x.data[i * channels + ch] as f32 / 255.0 - m) / s;
        }
    }
    out
}

/// The normalization of an evaluation: per-channel mean and std.
#[derive(Debug, Clone, Copy)]
pub struct Norm<'a> {
    pub mean: &'a [f64],
    pub std: &'a [f64],
}

/// Preprocessed images of `range`, in parallel (each unreadable one an error of its own).
pub(crate) fn load_batch(
    ds: &dyn Dataset,
    range: std::ops::Range<usize>,
    size: usize,
    channels: usize,
    norm: Norm,
) -> Vec<(usize, Result<Vec<f32>>)> {
    range
        .into_par_iter()
        .map(|i| (i, ds.load(i).map(|img| eval_tensor(&img, size, channels, norm.mean, norm.std))))
        .collect()
}

/// Raw-pixel features (the normalized image, flattened): the baseline k-NN is compared with.
pub fn raw_pixels(ds: &dyn Dataset, size: usize, channels: usize, aug: &AugmentConfig) -> Features {
    let mut f = Features { dim: channels * size * size, ..Default::default() };
    let norm = Norm { mean: &aug.mean, std: &aug.std };
    for (i, r) in load_batch(ds, 0..ds.len(), size, channels, norm) {
        match r {
            Ok(v) => {
                f.data.extend(v);
                f.indices.push(i);
                f.labels.push(ds.label(i));
            }
            Err(e) => f.skipped.push(BadImage { index: i, source: ds.source(i), why: e.to_string() }),
        }
    }
    f
}

/// The [CLS] features of a DINO model's backbone at its global crop size, on any device: the
/// shared [`VitRunner`] with the weights' `backbone.` prefix removed (k-NN evaluation).
pub struct Extractor<M: DinoModel> {
    runner: VitRunner<M::Backbone>,
    pub batch: usize,
}

impl<M: DinoModel> Extractor<M> {
    /// Build and compile for batches of up to `batch` images, run on `device`.
    pub fn new(batch: usize, device: crate::device::Device) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Config { what: "feature batch".into(), why: "must be at least 1".into() });
        }
        Ok(Extractor { runner: VitRunner::new(Output::LastCls(1), None, device)?, batch })
    }

    /// Load the backbone's weights (`backbone.*` names); every one must be present.
    pub fn set_weights(&mut self, w: &Weights) -> Result<()> {
        let backbone: Weights =
            w.iter().filter_map(|(k, v)| k.strip_prefix("backbone.").map(|n| (n.to_string(), v.clone()))).collect();
        self.runner.set_weights(&backbone).map_err(|e| match e {
            Error::UnknownName { kind, name, .. } => Error::UnknownName {
                kind,
                name: format!("backbone.{name}"),
                hint: " in the weights handed to the feature extractor".into(),
            },
            e => e,
        })
    }

    /// Features of every readable image of `ds`; `progress(done, total)` after each batch.
    pub fn features(&mut self, ds: &dyn Dataset, progress: impl FnMut(usize, usize)) -> Result<Features> {
        let cfg = M::CONFIG;
        let norm = Norm { mean: &cfg.augment.mean, std: &cfg.augment.std };
        self.runner.features(ds, cfg.global.size, norm, self.batch, progress)
    }
}

/// Randomly initialized weights of `M` (the student's initialization for `seed`).
pub fn random_init<M: DinoModel>(seed: u64) -> Weights {
    let mut cx = Graph::new();
    let m = M::new(&mut cx);
    let params = ParamSet::of(&m, &mut cx);
    params.init(&mut cx, seed);
    params
        .params
        .iter()
        .map(|p| (p.name.clone(), tensor(&p.shape, data::get(&cx, p.id).expect("initialized"))))
        .collect()
}

/// The parameter shapes of a backbone (its graph built, nothing compiled).
pub fn param_shapes<V: dino_runtime::model::VitModel>() -> BTreeMap<String, Vec<usize>> {
    let mut cx = Graph::new();
    let m = V::new(&mut cx);
    ParamSet::of(&m, &mut cx).params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect()
}

/// Random weights of a backbone (the student's initialization for `seed`).
pub fn random_backbone<V: dino_runtime::model::VitModel>(seed: u64) -> Weights {
    let mut cx = Graph::new();
    let m = V::new(&mut cx);
    let p = ParamSet::of(&m, &mut cx);
    p.init(&mut cx, seed);
    p.params.iter().map(|q| (q.name.clone(), tensor(&q.shape, data::get(&cx, q.id).expect("initialized")))).collect()
}

fn tensor(shape: &[usize], data: &[f32]) -> NamedTensor {
    NamedTensor { shape: shape.to_vec(), data: data.to_vec() }
}
