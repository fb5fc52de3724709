//! A backbone compiled once for images of any size (divisible by the patch): patches and the
//! position-embedding matrix are inputs, so one graph serves every size.
use dino_runtime::backend::executor::Executor;
use dino_runtime::backend::Passes;
use dino_runtime::graph::dims;
use dino_runtime::graph::{data, Handles};
use dino_runtime::model::VitModel;
use dino_runtime::nn::vit::{patchify, resample_matrix, VitLayers};
use dino_runtime::nn::ParamSet;
use dino_runtime::{Error, Result};
use luminal::prelude::*;

use super::features::{load_batch, Norm};
use super::{Features, Weights};
use dino_runtime::data::loader::BadImage;
use dino_runtime::data::Dataset;

/// What the runner computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The last block's attention weights `(b, H, t, t)`.
    Attention,
    /// The [CLS] token after each of the last `n` blocks (each through the final norm),
    /// concatenated: `(b, n * D)`.
    LastCls(usize),
    /// The final [CLS] token and the mean of the final patch tokens: `(b, 2 * D)` (DINO's
    /// linear-probe features for ViT-B).
    ClsAndPatchMean,
    /// Every final token through the norm, [CLS] first: `(b, t * D)`.
    Tokens,
}

/// A compiled backbone graph and its handles (what [`VitRunner`] runs).
pub struct BuiltForward<V: VitModel> {
    pub cx: Box<Graph>,
    pub params: ParamSet,
    pub patches: NodeIndex,
    pub resample: NodeIndex,
    pub outputs: Vec<NodeIndex>,
    pub model: V,
    /// Seconds spent building the graph (the rest of the call compiled it).
    pub build_s: f64,
}

/// What a compiled forward program needs besides its plan: the builder's node handles and the
/// fixed dims it was planned at (stored in the artifact as the program's handles).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ForwardHandles {
    pub params: ParamSet,
    pub patches: NodeIndex,
    pub resample: NodeIndex,
    pub outputs: Vec<NodeIndex>,
    /// Images per run (a smaller last batch is padded) and their side in pixels.
    pub batch: usize,
    pub size: usize,
}

pub struct VitRunner<V: VitModel> {
    cx: Box<Graph>,
    params: ParamSet,
    patches: NodeIndex,
    resample: NodeIndex,
    outputs: Vec<NodeIndex>,
    rt: Box<dyn Executor>,
    pub output: Output,
    /// A compiled program's (batch, size): it runs at those dims only.
    fixed: Option<(usize, usize)>,
    _model: std::marker::PhantomData<V>,
}

impl<V: VitModel> VitRunner<V> {
    /// Build and compile for `device`; `eps` replaces the declared LayerNorm epsilon (weights
    /// trained with another one).
    pub fn new(output: Output, eps: Option<f32>, device: crate::device::Device) -> Result<Self> {
        Self::new_with(output, eps, device, &Passes::standard())
    }

    /// [`Self::new`] compiled by `passes` (the pass tests compare pipelines on every preset).
    pub fn new_with(output: Output, eps: Option<f32>, device: crate::device::Device, passes: &Passes) -> Result<Self> {
        let b = Self::build_compiled(output, eps, 1, passes)?;
        let rt = device.executor(&b.cx)?;
        Ok(VitRunner {
            cx: b.cx,
            params: b.params,
            patches: b.patches,
            resample: b.resample,
            outputs: b.outputs,
            rt,
            output,
            fixed: None,
            _model: std::marker::PhantomData,
        })
    }

    /// A runner of a compiled forward program: no graph built, no pass run. `cx` is the
    /// program's graph shell and `rt` its executor; it runs `h.batch` images of `h.size` px
    /// at a time.
    pub fn from_program(cx: Box<Graph>, h: ForwardHandles, output: Output, rt: Box<dyn Executor>) -> Self {
        VitRunner {
            cx,
            params: h.params,
            patches: h.patches,
            resample: h.resample,
            outputs: h.outputs,
            rt,
            output,
            fixed: Some((h.batch, h.size)),
            _model: std::marker::PhantomData,
        }
    }

    /// The batch a compiled program runs at (none for a graph compiled here).
    pub fn fixed_batch(&self) -> Option<usize> {
        self.fixed.map(|f| f.0)
    }

    /// The graph for `batch` images at the native size, compiled by `compiler` (`dino
    /// inspect` passes one that draws every stage).
    pub fn build_compiled<C: Compiler>(
        output: Output,
        eps: Option<f32>,
        batch: usize,
        compiler: C,
    ) -> Result<BuiltForward<V>> {
        let t0 = std::time::Instant::now();
        let mut cx = Box::new(Graph::new());
        let g = V::IMAGE / V::PATCH;
        for (k, v) in [(dims::BATCH, batch.max(1)), (dims::PATCHES, g * g), (dims::TOKENS, g * g + 1 + V::REGISTERS)] {
            cx.set_dyn_dim(k, v);
        }
        let model = match eps {
            Some(e) => V::new_with_eps(&mut cx, e),
            None => V::new(&mut cx),
        };
        let patches = cx.named_tensor::<(dims::Batch, dims::Patches, <V::Vit as VitLayers>::PatchPixels)>("patches");
        let resample = cx.named_tensor::<(dims::Patches, <V::Vit as VitLayers>::Native)>("resample");
        let vit = model.vit();
        let outputs: Vec<NodeIndex> = match output {
            Output::Attention => vec![vit.last_attention_dyn(patches, resample).id],
            Output::LastCls(n) => vit.last_cls_dyn(patches, resample, n).iter().map(|t| t.id).collect(),
            Output::Tokens => vec![vit.features_dyn(patches, resample).id],
            Output::ClsAndPatchMean => {
                let t = vit.features_dyn(patches, resample);
                let sum = t.sum_reduce::<(dims::Batch, <V::Vit as VitLayers>::Dim), Axis<1>>();
                let cls = vit.last_cls_dyn(patches, resample, 1)[0];
                // mean over patches = (sum over all tokens - cls) / n; 'n' is set per run
                vec![cls.id, sum.id]
            }
        };
        let params = ParamSet::of(&model, &mut cx);
        for p in &params.params {
            data::set(&mut cx, p.id, vec![0.0; p.numel()]);
            cx.no_delete.insert(p.id);
        }
        for id in &outputs {
            cx.no_delete.insert(*id);
        }
        let mut h = Handles(outputs);
        let build_s = t0.elapsed().as_secs_f64();
        cx.compile(compiler, &mut h);
        Ok(BuiltForward { cx, params, patches: patches.id, resample: resample.id, outputs: h.0, model, build_s })
    }

    /// Random weights, initialized as DINO does (tests; the weights of a real run are loaded
    /// with [`Self::set_weights`]).
    pub fn init_random(&mut self, seed: u64) {
        self.params.init(&mut self.cx, seed);
    }

    /// Load backbone weights (`cls_token`, `blocks.0.norm1.weight`, ...): every one must be
    /// present with its full shape.
    pub fn set_weights(&mut self, w: &Weights) -> Result<()> {
        for p in &self.params.params {
            let v = w.get(&p.name).ok_or_else(|| Error::UnknownName {
                kind: "tensor",
                name: p.name.clone(),
                hint: format!(" among the {} tensors of the weights", w.len()),
            })?;
            if v.shape != p.shape {
                return Err(Error::WrongShape {
                    name: p.name.clone(),
                    expected: p.shape.clone(),
                    got: v.shape.clone(),
                });
            }
            self.params.set(&mut self.cx, &p.name, v.data.clone())?;
        }
        Ok(())
    }

    /// The names of the backbone's parameters.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.params.iter().map(|p| p.name.as_str())
    }

    /// The output rows of every readable image of `ds` at `size` x `size` (DINO's evaluation
    /// preprocessing with `norm`), `batch` images per run; `progress(done, total)` after each
    /// batch. Unreadable images are skipped and listed in the result.
    pub fn features(
        &mut self,
        ds: &dyn Dataset,
        size: usize,
        norm: Norm,
        batch: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Features> {
        let mut f = Features::default();
        let batch = self.fixed.map_or(batch, |fixed| fixed.0);
        let n = ds.len();
        let mut start = 0;
        while start < n {
            let end = (start + batch.max(1)).min(n);
            let mut xs = vec![];
            let mut rows = vec![];
            for (i, r) in load_batch(ds, start..end, size, V::CHANNELS, norm) {
                match r {
                    Ok(x) => {
                        xs.push(x);
                        rows.push(i);
                    }
                    Err(e) => f.skipped.push(BadImage { index: i, source: ds.source(i), why: e.to_string() }),
                }
            }
            if !xs.is_empty() {
                for row in self.run(&xs, size, size)? {
                    f.dim = row.len();
                    f.data.extend(row);
                }
                f.labels.extend(rows.iter().map(|&i| ds.label(i)));
                f.indices.extend(rows);
            }
            progress(end, n);
            start = end;
        }
        Ok(f)
    }

    /// Run on `images` (normalized CHW floats, all `h x w`, both divisible by the patch).
    /// Returns the output rows, one `Vec` per image.
    pub fn run(&mut self, images: &[Vec<f32>], h: usize, w: usize) -> Result<Vec<Vec<f32>>> {
        let (p, c) = (V::PATCH, V::CHANNELS);
        if h % p != 0 || w % p != 0 || h == 0 || w == 0 {
            return Err(Error::Config {
                what: "image size".into(),
                why: format!("{h}x{w} is not a whole number of {p} px patches"),
            });
        }
        if let Some((fb, fs)) = self.fixed {
            if (h, w) != (fs, fs) || images.len() > fb {
                return Err(Error::Config {
                    what: "--compiled".into(),
                    why: format!(
                        "the program runs batches of up to {fb} images of {fs}x{fs} px, not {} of {h}x{w} (compile \
                         one with --size {h} --batch-size {}, or drop --compiled)",
                        images.len(),
                        images.len().max(fb)
                    ),
                });
            }
        }
        let (gh, gw) = (h / p, w / p);
        let (b, n) = (images.len(), gh * gw);
        // a compiled program runs its whole batch: the rows past `b` are zeros, dropped below
        let run_b = self.fixed.map_or(b, |f| f.0);
        let mut pv = Vec::with_capacity(run_b * n * c * p * p);
        for img in images {
            pv.extend(patchify(img, c, h, w, p));
        }
        pv.resize(run_b * n * c * p * p, 0.0);
        if self.fixed.is_none() {
            for (k, v) in [(dims::BATCH, b), (dims::PATCHES, n), (dims::TOKENS, n + 1 + V::REGISTERS)] {
                self.cx.set_dyn_dim(k, v);
            }
        }
        data::set(&mut self.cx, self.patches, pv);
        data::set(&mut self.cx, self.resample, resample_matrix(V::IMAGE / p, gh, gw, V::CONFIG.interpolation));
        self.rt.run(&mut self.cx, &self.outputs)?;
        let outs: Vec<Vec<f32>> = self
            .outputs
            .iter()
            .map(|id| data::take(&mut self.cx, *id).ok_or_else(|| Error::Backend("missing output".into())))
            .collect::<Result<_>>()?;
        let per = |v: &Vec<f32>| v.len() / run_b;
        Ok((0..b)
            .map(|i| match self.output {
                Output::ClsAndPatchMean => {
                    let d = per(&outs[0]);
                    let cls = &outs[0][i * d..(i + 1) * d];
                    let sum = &outs[1][i * d..(i + 1) * d];
                    cls.iter().copied().chain(sum.iter().zip(cls).map(|(s, c)| (s - c) / n as f32)).collect()
                }
                _ => outs.iter().flat_map(|o| o[i * per(o)..(i + 1) * per(o)].to_vec()).collect(),
            })
            .collect())
    }
}

/// The runner's output rows for every readable image of `ds`, each preprocessed as DINO's
/// evaluation does at the model's native size (see `eval_view`), with a progress bar;
/// unreadable images skipped and listed.
pub fn dataset_features<V: VitModel>(
    runner: &mut VitRunner<V>,
    ds: &dyn dino_runtime::data::Dataset,
    size: usize,
    mean: &[f64],
    std: &[f64],
    label: &str,
    quiet: bool,
) -> Result<Features> {
    let mut bar = crate::progress::Progress::new(label, ds.len() as u64, quiet);
    let f = runner.features(ds, size, Norm { mean, std }, 256, |done, _| bar.set(done as u64, String::new))?;
    bar.finish();
    for b in &f.skipped {
        bar.println(&format!("warning: skipped unreadable image {}: {}", b.source, b.why));
    }
    Ok(f)
}
