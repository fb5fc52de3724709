//! [CLS] features of whole images (no augmentation), from a backbone's weights.
use std::collections::BTreeMap;

use dino_runtime::backend::executor::Executor;
use dino_runtime::backend::Passes;
use dino_runtime::config::AugmentConfig;
use dino_runtime::data::loader::BadImage;
use dino_runtime::data::multicrop::eval_view;
use dino_runtime::data::{Dataset, Image};
use dino_runtime::graph::{data, Handles};
use dino_runtime::model::DinoModel;
use dino_runtime::nn::ParamSet;
use dino_runtime::{Error, Result};
use luminal::prelude::*;
use rayon::prelude::*;

/// Parameter values by name (`backbone.blocks.0.norm1.weight`, ...).
pub type Weights = BTreeMap<String, Vec<f32>>;

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
pub fn eval_tensor(img: &Image, size: usize, channels: usize, aug: &AugmentConfig) -> Vec<f32> {
    let x = eval_view(&img.with_channels(channels), size);
    let n = size * size;
    let mut out = vec![0f32; channels * n];
    for ch in 0..channels {
        let (m, s) = (aug.mean[ch % aug.mean.len()] as f32, aug.std[ch % aug.std.len()] as f32);
        for i in 0..n {
            out[ch * n + i] = (x.data[i * channels + ch] as f32 / 255.0 - m) / s;
        }
    }
    out
}

/// Preprocessed images `first..first + n` (unreadable ones left out and reported).
fn load_batch(
    ds: &dyn Dataset,
    range: std::ops::Range<usize>,
    size: usize,
    channels: usize,
    aug: &AugmentConfig,
) -> Vec<(usize, Result<Vec<f32>>)> {
    range.into_par_iter().map(|i| (i, ds.load(i).map(|img| eval_tensor(&img, size, channels, aug)))).collect()
}

/// Raw-pixel features (the normalized image, flattened): the baseline k-NN is compared with.
pub fn raw_pixels(ds: &dyn Dataset, size: usize, channels: usize, aug: &AugmentConfig) -> Features {
    let mut f = Features { dim: channels * size * size, ..Default::default() };
    for (i, r) in load_batch(ds, 0..ds.len(), size, channels, aug) {
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

/// A compiled forward graph of a model's backbone on global-size images, returning the
/// normalized [CLS] token.
pub struct Extractor<M: DinoModel> {
    cx: Box<Graph>,
    params: ParamSet,
    input: NodeIndex,
    output: NodeIndex,
    rt: Box<dyn Executor>,
    pub batch: usize,
    _model: M,
}

impl<M: DinoModel> Extractor<M> {
    /// Build and compile for batches of up to `batch` images, run on `device`.
    pub fn new(batch: usize, device: crate::device::Device) -> Result<Self> {
        let mut cx = Box::new(Graph::new());
        cx.set_dyn_dim('b', batch);
        let model = M::new(&mut cx);
        let x = cx.named_tensor::<(Dyn<'b'>, M::Channels, M::Global, M::Global)>("images");
        let y = model.backbone_global(x);
        cx.no_delete.insert(y.id);
        let mut params = ParamSet::of(&model, &mut cx);
        params.params.retain(|p| p.name.starts_with("backbone."));
        // placeholders so compilation sees every parameter as kept
        for p in &params.params {
            data::set(&mut cx, p.id, vec![0.0; p.numel()]);
            cx.no_delete.insert(p.id);
        }
        let mut out = Handles(vec![y.id]);
        cx.compile(Passes::default(), &mut out);
        let rt = device.executor(&cx)?;
        Ok(Extractor { cx, params, input: x.id, output: out.0[0], rt, batch, _model: model })
    }

    /// Load the backbone's weights (`backbone.*` names); every one must be present.
    pub fn set_weights(&mut self, w: &Weights) -> Result<()> {
        for p in &self.params.params {
            let v = w.get(&p.name).ok_or_else(|| Error::UnknownName {
                name: p.name.clone(),
                hint: " in the weights handed to the feature extractor".into(),
            })?;
            self.params.set(&mut self.cx, &p.name, v.clone())?;
        }
        Ok(())
    }

    /// Features of every readable image of `ds`; `progress(done, total)` after each batch.
    pub fn features(&mut self, ds: &dyn Dataset, mut progress: impl FnMut(usize, usize)) -> Result<Features> {
        let cfg = M::CONFIG;
        let (size, channels, dim) = (cfg.global.size, cfg.backbone.channels, cfg.backbone.dim);
        let mut f = Features { dim, ..Default::default() };
        let n = ds.len();
        let mut start = 0;
        while start < n {
            let end = (start + self.batch).min(n);
            let mut images = Vec::with_capacity((end - start) * channels * size * size);
            let mut rows = vec![];
            for (i, r) in load_batch(ds, start..end, size, channels, &cfg.augment) {
                match r {
                    Ok(v) => {
                        images.extend(v);
                        rows.push(i);
                    }
                    Err(e) => f.skipped.push(BadImage { index: i, source: ds.source(i), why: e.to_string() }),
                }
            }
            if !rows.is_empty() {
                self.cx.set_dyn_dim('b', rows.len());
                data::set(&mut self.cx, self.input, images);
                self.rt.run(&mut self.cx, &[self.output])?;
                let y = data::take(&mut self.cx, self.output)
                    .ok_or_else(|| Error::Backend("the feature graph produced no output".into()))?;
                f.data.extend_from_slice(&y[..rows.len() * dim]);
                f.labels.extend(rows.iter().map(|&i| ds.label(i)));
                f.indices.extend(rows);
            }
            progress(end, n);
            start = end;
        }
        Ok(f)
    }
}

/// Randomly initialized weights of `M` (the student's initialization for `seed`).
pub fn random_init<M: DinoModel>(seed: u64) -> Weights {
    let mut cx = Graph::new();
    let m = M::new(&mut cx);
    let params = ParamSet::of(&m, &mut cx);
    params.init(&mut cx, seed);
    params.params.iter().map(|p| (p.name.clone(), data::get(&cx, p.id).expect("initialized").to_vec())).collect()
}

/// Random weights of a backbone (the student's initialization for `seed`).
pub fn random_backbone<V: dino_runtime::model::VitModel>(seed: u64) -> Weights {
    let mut cx = Graph::new();
    let m = V::new(&mut cx);
    let p = ParamSet::of(&m, &mut cx);
    p.init(&mut cx, seed);
    p.params.iter().map(|q| (q.name.clone(), data::get(&cx, q.id).expect("initialized").to_vec())).collect()
}
