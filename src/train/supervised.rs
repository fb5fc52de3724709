//! A supervised baseline on the same engine: a backbone and a linear classifier on its final
//! [CLS] token, trained with cross-entropy on Fashion-MNIST's labels (AdamW, linear warmup
//! then cosine, RandomResizedCrop + flip). It is the "supervised model of the same
//! architecture" the attention-map comparison needs.
use dino_runtime::graph::dims;
use std::path::Path;
use std::time::Instant;

use dino_runtime::backend::Passes;
use dino_runtime::config::{AugmentConfig, PerChannel};
use dino_runtime::data::loader::derive_seed;
use dino_runtime::data::multicrop::{View, ViewTransform};
use dino_runtime::data::Dataset;
use dino_runtime::dino::schedule::cosine;
use dino_runtime::graph::{data, Handles};
use dino_runtime::model::VitModel;
use dino_runtime::nn::vit::{patchify, resample_matrix, VitLayers};
use dino_runtime::nn::{log_softmax, Init, ParamSet, ParamVisitor, Parameters};
use dino_runtime::optim::{AdamWConfig, OptimizerKind};
use dino_runtime::step::{OptimizerSpec, TrainStep};
use dino_runtime::tensors::TensorFile;
use dino_runtime::{Error, Result};
use luminal::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::progress::Progress;

/// Fashion-MNIST's classes.
pub const CLASSES: usize = 10;

/// `logits = x W^T + b`, `W (K, D)` named `head.weight` as timm's classifier.
pub struct Classifier<Dm: Dimension, const K: usize> {
    pub weight: GraphTensor<(Const<K>, Dm)>,
    pub bias: GraphTensor<(Const<K>,)>,
}

impl<Dm: Dimension, const K: usize> Parameters for Classifier<Dm, K> {
    fn visit(&self, v: &mut ParamVisitor) {
        v.tensor("head.weight", self.weight, Init::TruncNormal { std: 0.02 });
        v.tensor("head.bias", self.bias, Init::Zeros);
    }
}

/// Settings of a supervised run.
#[derive(Debug, Clone)]
pub struct SupervisedOptions {
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate (AdamW), reached after `warmup_epochs`.
    pub lr: f64,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub quiet: bool,
    /// Where the step and the evaluation run.
    pub device: crate::device::Device,
}

/// What a supervised run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SupervisedReport {
    pub iterations: usize,
    pub final_loss: f32,
    /// Top-1 on the test split, percent.
    pub test_top1: f64,
    pub images_per_s: f64,
}

/// Train backbone `V` and a classifier on `train`, evaluate on `test`, save the weights (official
/// names plus `head.*`) to `out`.
pub fn train_supervised<V: VitModel>(
    train: &dyn Dataset,
    test: &dyn Dataset,
    o: &SupervisedOptions,
    out: &Path,
) -> Result<SupervisedReport> {
    if train.classes().len() != CLASSES {
        return Err(Error::Config {
            what: "supervised training".into(),
            why: format!("built for {CLASSES} classes (Fashion-MNIST); the data has {}", train.classes().len()),
        });
    }
    let (p, size, c) = (V::PATCH, V::IMAGE, V::CHANNELS);
    let g = size / p;
    let b = o.batch;
    let mut cx = Box::new(Graph::new());
    for (k, v) in [(dims::BATCH, b), (dims::PATCHES, g * g), (dims::TOKENS, g * g + 1 + V::REGISTERS)] {
        cx.set_dyn_dim(k, v);
    }
    let model = V::new(&mut cx);
    let head = Classifier::<<V::Vit as VitLayers>::Dim, CLASSES> {
        weight: cx.named_tensor("head.weight"),
        bias: cx.named_tensor("head.bias"),
    };
    let patches = cx.named_tensor::<(dims::Batch, dims::Patches, <V::Vit as VitLayers>::PatchPixels)>("patches");
    let resample = cx.named_tensor::<(dims::Patches, <V::Vit as VitLayers>::Native)>("resample");
    let onehot = cx.named_tensor::<(dims::Batch, Const<CLASSES>)>("labels");
    let cls = model.vit().last_cls_dyn(patches, resample, 1)[0];
    let logits = cls.matmul(head.weight.permute::<_, Axes2<1, 0>>())
        + head.bias.expand::<(dims::Batch, Const<CLASSES>), Axis<0>>();
    let loss = (log_softmax(logits) * onehot).sum_reduce::<R0, Axes2<0, 1>>() * (-1.0 / b as f32);
    let params = ParamSet::of(&[("", &model as &dyn Parameters), ("", &head as &dyn Parameters)][..], &mut cx);
    params.init(&mut cx, o.seed);
    data::set(&mut cx, resample.id, resample_matrix(g, g, g, V::CONFIG.interpolation));
    cx.no_delete.insert(resample.id);
    let adamw = OptimizerSpec::plain(OptimizerKind::AdamW(AdamWConfig::default()));
    let mut step = TrainStep::build(cx, loss.id, params, adamw)?;
    step.input("patches", patches.id).input("labels", onehot.id);
    step.optimizer.init_state(&mut step.cx);
    step.compile(Passes::default(), &mut Handles(vec![]));
    step.attach(o.device.executor(&step.cx)?);

    let aug =
        AugmentConfig::flip_only(PerChannel::from_slice("mean", &o.mean)?, PerChannel::from_slice("std", &o.std)?);
    let view = ViewTransform { view: View::Global1, size, scale: (0.4, 1.0), aug };
    let niter = train.len() / b;
    let lr = cosine(o.lr, 1e-6, o.epochs, niter, o.warmup_epochs, 0.0);
    let t0 = Instant::now();
    let mut last = f32::NAN;
    for epoch in 0..o.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(o.seed, 11, epoch as u64, 0)));
        let mut bar = Progress::new(&format!("supervised {}/{}", epoch + 1, o.epochs), niter as u64, o.quiet);
        for s in 0..niter {
            let it = epoch * niter + s;
            let items: Vec<(Vec<f32>, usize)> = (0..b)
                .into_par_iter()
                .map(|j| {
                    let i = order[s * b + j];
                    let img = train.load(i)?.with_channels(c);
                    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(o.seed, 12, epoch as u64, (s * b + j) as u64));
                    let x = view.apply_u8(&img, &mut rng);
                    let mut t = vec![0f32; c * size * size];
                    view.normalize_into(&x, &mut t);
                    Ok((patchify(&t, c, size, size, p), train.label(i).unwrap_or(0)))
                })
                .collect::<Result<_>>()?;
            let mut pv = Vec::with_capacity(b * g * g * c * p * p);
            let mut lab = vec![0f32; b * CLASSES];
            for (j, (x, y)) in items.into_iter().enumerate() {
                pv.extend(x);
                lab[j * CLASSES + y] = 1.0;
            }
            step.set("patches", pv)?;
            step.set("labels", lab)?;
            step.pre_step(lr[it] as f32, o.weight_decay as f32);
            step.run()?;
            last = step.take_loss(it)?;
            step.advance();
            bar.set(s as u64 + 1, || format!("loss {last:.4}"));
        }
        bar.finish();
    }
    let images_per_s = (o.epochs * niter * b) as f64 / t0.elapsed().as_secs_f64();
    // save, then evaluate through the any-size runner (what every other command loads)
    step.sync()?;
    let mut f = TensorFile::default();
    for (q, (name, v)) in step.trained.params.iter().zip(step.weights()?) {
        f.insert(name, &q.shape, v);
    }
    f.metadata.insert("source".into(), "dino supervised baseline".into());
    f.save(out)?;
    let weights: crate::eval::Weights = f.tensors.clone();
    let mut runner = crate::eval::VitRunner::<V>::new(crate::eval::Output::LastCls(1), None, o.device)?;
    runner.set_weights(&weights)?;
    let (w, bias) = (&f.tensors["head.weight"].data, &f.tensors["head.bias"].data);
    let mut correct = 0;
    let mut start = 0;
    while start < test.len() {
        let end = (start + 256).min(test.len());
        let xs: Vec<Vec<f32>> = (start..end)
            .map(|i| test.load(i).map(|im| crate::eval::preprocess::normalize(&im.with_channels(c), &o.mean, &o.std)))
            .collect::<Result<_>>()?;
        for (k, feat) in runner.run(&xs, size, size)?.iter().enumerate() {
            let d = feat.len();
            let scores: Vec<f32> =
                (0..CLASSES).map(|cl| bias[cl] + (0..d).map(|j| w[cl * d + j] * feat[j]).sum::<f32>()).collect();
            let pred = (0..CLASSES).max_by(|a, b| scores[*a].total_cmp(&scores[*b])).unwrap_or(0);
            correct += (Some(pred) == test.label(start + k)) as usize;
        }
        start = end;
    }
    Ok(SupervisedReport {
        iterations: o.epochs * niter,
        final_loss: last,
        test_top1: 100.0 * correct as f64 / test.len().max(1) as f64,
        images_per_s,
    })
}
