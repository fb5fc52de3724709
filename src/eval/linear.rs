//! The linear probe of DINO's `eval_linear.py`, scaled to a CPU: a linear classifier on
//! frozen features (ViT-S and smaller: the [CLS] token of each of the last 4 blocks through
//! the final norm, concatenated; ViT-B: the last [CLS] and the mean patch token), trained with
//! SGD (momentum 0.9, no weight decay, cosine schedule to 0) on the engine: the classifier,
//! its cross-entropy, autograd and the optimizer are one compiled graph. The features are
//! computed once (no augmentation: the reference's random crops and flips of every epoch
//! would cost a full forward pass per epoch on the CPU).
use dino_runtime::backend::Passes;
use dino_runtime::graph::dims;
use dino_runtime::graph::Handles;
use dino_runtime::nn::{log_softmax, Init, ParamInfo, ParamSet};
use dino_runtime::optim::{OptimizerKind, SgdConfig};
use dino_runtime::step::{OptimizerSpec, TrainStep};
use dino_runtime::{Error, Result};
use luminal::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::progress::Progress;

/// Settings of the probe.
#[derive(Debug, Clone)]
pub struct LinearOptions {
    pub epochs: usize,
    pub batch: usize,
    /// Learning rate for a batch of 256 (scaled linearly, as the reference).
    pub lr: f64,
    pub seed: u64,
    pub quiet: bool,
    /// Where the probe's step runs.
    pub device: crate::device::Device,
}

/// Top-1 accuracy (percent) after each epoch, and the best.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinearReport {
    pub feature_dim: usize,
    pub per_epoch_top1: Vec<f64>,
    pub best_top1: f64,
    pub final_top1: f64,
}

fn accuracy(feats: &[f32], labels: &[usize], dim: usize, w: &[f32], b: &[f32], classes: usize) -> f64 {
    let mut correct = 0;
    for (x, y) in feats.chunks(dim).zip(labels) {
        let pred = (0..classes)
            .map(|c| (c, b[c] + x.iter().zip(&w[c * dim..(c + 1) * dim]).map(|(a, b)| a * b).sum::<f32>()))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|p| p.0)
            .unwrap_or(0);
        correct += (pred == *y) as usize;
    }
    100.0 * correct as f64 / labels.len().max(1) as f64
}

/// Train the probe on `(train, train_labels)` and report test accuracy after every epoch.
#[allow(clippy::too_many_arguments)]
pub fn linear_probe(
    train: &[f32],
    train_labels: &[usize],
    test: &[f32],
    test_labels: &[usize],
    dim: usize,
    classes: usize,
    o: &LinearOptions,
) -> Result<LinearReport> {
    let n = train_labels.len();
    let b = o.batch.min(n);
    if b == 0 || classes == 0 {
        return Err(Error::Config { what: "linear probe".into(), why: "needs labeled training features".into() });
    }
    let mut cx = Box::new(Graph::new());
    cx.set_dyn_dim(dims::BATCH, b);
    cx.set_dyn_dim(dims::FEATURES, dim);
    cx.set_dyn_dim(dims::CLASSES, classes);
    let x = cx.named_tensor::<(dims::Batch, dims::Features)>("features");
    let y = cx.named_tensor::<(dims::Batch, dims::Classes)>("labels");
    let w = cx.named_tensor::<(dims::Classes, dims::Features)>("linear.weight");
    let bias = cx.named_tensor::<(dims::Classes,)>("linear.bias");
    let logits = x.matmul(w.permute::<_, Axes2<1, 0>>()) + bias.expand::<(dims::Batch, dims::Classes), Axis<0>>();
    let loss = (log_softmax(logits) * y).sum_reduce::<R0, Axes2<0, 1>>() * (-1.0 / b as f32);
    // the reference's init: N(0, 0.01) weights, zero bias
    let params = ParamSet {
        params: vec![
            ParamInfo {
                name: "linear.weight".into(),
                id: w.id,
                shape: vec![classes, dim],
                init: Init::TruncNormal { std: 0.01 },
            },
            ParamInfo { name: "linear.bias".into(), id: bias.id, shape: vec![classes], init: Init::Zeros },
        ],
    };
    params.init(&mut cx, o.seed);
    let sgd = OptimizerSpec::plain(OptimizerKind::Sgd(SgdConfig { momentum: 0.9 }));
    let mut step = TrainStep::build(cx, loss.id, params, sgd)?;
    step.input("features", x.id).input("labels", y.id);
    step.optimizer.init_state(&mut step.cx);
    step.compile(Passes::default(), &mut Handles(vec![]));
    step.attach(o.device.executor(&step.cx)?);
    let steps = n / b;
    let peak = o.lr * b as f64 / 256.0;
    let total = (o.epochs * steps).max(1);
    let mut per_epoch = vec![];
    let mut bar = Progress::new("linear probe", o.epochs as u64, o.quiet);
    for epoch in 0..o.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(o.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9)));
        for s in 0..steps {
            let it = epoch * steps + s;
            // CosineAnnealingLR(T_max = epochs) stepped per epoch in the reference; per step here
            let lr = peak * 0.5 * (1.0 + (std::f64::consts::PI * it as f64 / total as f64).cos());
            let mut xs = Vec::with_capacity(b * dim);
            let mut ys = vec![0f32; b * classes];
            for (j, &i) in order[s * b..(s + 1) * b].iter().enumerate() {
                xs.extend_from_slice(&train[i * dim..(i + 1) * dim]);
                ys[j * classes + train_labels[i]] = 1.0;
            }
            step.set("features", xs)?;
            step.set("labels", ys)?;
            step.pre_step(lr as f32, 0.0);
            step.run()?;
            step.take_loss(it)?;
            step.advance();
        }
        step.sync()?;
        let wb = step.weights()?;
        let (wv, bv) = (&wb[0].1, &wb[1].1);
        let acc = accuracy(test, test_labels, dim, wv, bv, classes);
        per_epoch.push(acc);
        bar.set(epoch as u64 + 1, || format!("test top-1 {acc:.2}%"));
    }
    bar.finish();
    let best = per_epoch.iter().copied().fold(0.0, f64::max);
    Ok(LinearReport {
        feature_dim: dim,
        final_top1: *per_epoch.last().unwrap_or(&0.0),
        best_top1: best,
        per_epoch_top1: per_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_linearly_separable_problem() {
        // 3 classes along 3 directions of an 8-d space, with noise
        let dim = 8;
        let (tx, ty) = crate::eval::planted_classes(600, dim, 1.0, 0.3, 7);
        let (vx, vy) = crate::eval::planted_classes(300, dim, 1.0, 0.3, 8);
        let o =
            LinearOptions { epochs: 10, batch: 32, lr: 2.0, seed: 0, quiet: true, device: crate::device::Device::Cpu };
        let r = linear_probe(&tx, &ty, &vx, &vy, dim, 3, &o).unwrap();
        assert_eq!(r.per_epoch_top1.len(), 10);
        assert!(r.final_top1 > 95.0, "{r:?}");
        assert!(r.per_epoch_top1[0] < 100.0 || r.final_top1 == 100.0);
    }
}
