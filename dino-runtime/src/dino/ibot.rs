//! iBOT's masked-patch loss as DINOv2 trains it (`dinov2/loss/ibot_patch_loss.py`): the
//! student sees global crops with some patches replaced by the mask token and predicts, for
//! each masked patch, the teacher's distribution of the same patch in the unmasked crop.
//!
//! ```text
//!   teacher masked patches t (M, K) ─┬─ softmax((t - c) / teacher_temp)   (EMA center c)
//!                                    └─ Sinkhorn-Knopp over the masked rows only
//!                                            │ q
//!   student masked patches s (M, K) ─ log_softmax(s / student_temp) ─ Σ_k q·log p ─┐
//!   weights w (M): 1 / masked patches of the row's crop (0 on padding) ─────────────┴─ -Σ w·(..) / crops
//! ```
//!
//! The rows are DINOv2's gathered masked patches, padded to a fixed upper bound (the shapes
//! are static): padding rows have mask 0 and weight 0, so they change nothing. The center follows the
//! mean of the teacher's masked patch rows over the global batch (DINOv2 averages each rank's
//! mean: the same when the ranks mask equally many patches, and this makes an N-rank step
//! equal the 1-rank step of the same global batch).
use luminal::prelude::*;

use crate::dist::op::all_reduce_tensor;
use crate::dist::Replicas;
use crate::nn::log_softmax;

/// The teacher's targets with DINO's centering: `softmax((t - c) / temp)` per patch row.
pub fn ibot_targets<Rows: Dimension, K: Dimension>(
    t: GraphTensor<(Rows, K)>,
    center: GraphTensor<(K,)>,
    temp: GraphTensor<R0>,
) -> GraphTensor<(Rows, K)> {
    ((t - center.expand::<(Rows, K), Axis<0>>()) * temp.recip().expand::<(Rows, K), _>()).softmax::<1>()
}

/// The teacher's targets with DINOv2's Sinkhorn-Knopp over the masked patch rows of every
/// rank (`iBOTPatchLoss.sinkhorn_knopp_teacher`, its `B` the number of masked patches); the
/// rows not masked get 0. `mask` is 1 on masked rows.
pub fn ibot_sinkhorn_knopp<Rows: Dimension, K: Dimension>(
    t: GraphTensor<(Rows, K)>,
    mask: GraphTensor<(Rows,)>,
    temp: GraphTensor<R0>,
    iterations: usize,
    replicas: Replicas,
) -> GraphTensor<(Rows, K)> {
    let k = crate::graph::view::logical_dims(&t.shape)[1].to_usize().expect("a constant number of prototypes") as f32;
    let m = mask.expand::<(Rows, K), Axis<1>>();
    // exp(0) on the rows not masked, then zeroed: no overflow can come from them
    let q = (t * temp.recip().expand::<(Rows, K), _>() * m).exp() * m;
    let count = over_ranks(mask.sum_reduce::<R0, Axis<0>>(), replicas, "ibot.masked").max_f32(1.0);
    let total = over_ranks(q.sum_reduce::<R0, Axes2<0, 1>>(), replicas, "ibot.sinkhorn.total");
    let mut q = q * total.max_f32(f32::MIN_POSITIVE).recip().expand::<(Rows, K), _>();
    for _ in 0..iterations {
        let per_prototype = over_ranks(q.sum_reduce::<(K,), Axis<0>>(), replicas, "ibot.sinkhorn.prototypes");
        q = q * per_prototype.max_f32(f32::MIN_POSITIVE).recip().expand::<(Rows, K), Axis<0>>() * (1.0 / k);
        // a row not masked sums to 0: divided by 1 instead, it stays 0
        let per_image = q.sum_reduce::<(Rows,), Axis<1>>() + (-mask + 1.0);
        q = q * per_image.recip().expand::<(Rows, K), Axis<1>>() * count.recip().expand::<(Rows, K), _>();
    }
    q * count.expand::<(Rows, K), _>()
}

/// `-Σ_rows w · Σ_k q log_softmax(s / student_temp) / crops`: DINOv2's `forward_masked` with
/// its `masks_weight` (`1 / masked patches of the crop`) as `weights` (0 on rows not masked)
/// and `crops` the global crops of this rank.
pub fn ibot_loss<Rows: Dimension, K: Dimension>(
    q: GraphTensor<(Rows, K)>,
    s: GraphTensor<(Rows, K)>,
    weights: GraphTensor<(Rows,)>,
    student_temp: f32,
    crops: usize,
) -> GraphTensor<R0> {
    let ce = (q * log_softmax(s * (1.0 / student_temp))).sum_reduce::<(Rows,), Axis<1>>();
    (ce * weights).sum_reduce::<R0, Axis<0>>() * (-1.0 / crops as f32)
}

/// The iBOT center after this step: `c' = m c + (1 - m) mean`, the mean of the teacher's
/// masked patch rows over the global batch.
pub fn ibot_center_update<Rows: Dimension, K: Dimension>(
    center: GraphTensor<(K,)>,
    t: GraphTensor<(Rows, K)>,
    mask: GraphTensor<(Rows,)>,
    momentum: f32,
    replicas: Replicas,
) -> GraphTensor<(K,)> {
    let sum =
        over_ranks((t * mask.expand::<(Rows, K), Axis<1>>()).sum_reduce::<(K,), Axis<0>>(), replicas, "ibot.center");
    let count = over_ranks(mask.sum_reduce::<R0, Axis<0>>(), replicas, "ibot.center.count").max_f32(1.0);
    let mean = sum * count.recip().expand::<(K,), _>();
    center * momentum + mean * (1.0 - momentum)
}

fn over_ranks<S: Shape>(x: GraphTensor<S>, replicas: Replicas, name: &str) -> GraphTensor<S> {
    if replicas.reduce {
        all_reduce_tensor(x, name)
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{data, dims, Handles};
    use crate::testing::Rng;

    type Rows = dims::PatchRows;

    const K: usize = 6;
    const ROWS: usize = 8; // 2 crops x 4 patches
    const MASK: [f32; ROWS] = [1., 0., 1., 1., 0., 0., 1., 0.];

    fn weights() -> Vec<f32> {
        // crop 0 masks 3 patches, crop 1 masks 1
        MASK.iter().enumerate().map(|(i, &m)| m / if i < 4 { 3.0 } else { 1.0 }).collect()
    }

    /// A graph (boxed: its tensors point into it) with the inputs `t`, `s`, `mask`, `weights`.
    fn graph() -> (Box<Graph>, [GraphTensor<(Rows, Const<K>)>; 2], GraphTensor<(Rows,)>, GraphTensor<(Rows,)>) {
        let mut cx = Box::new(Graph::new());
        cx.set_dyn_dim(dims::PATCH_ROWS, ROWS);
        let t = cx.named_tensor::<(Rows, Const<K>)>("t");
        let s = cx.named_tensor::<(Rows, Const<K>)>("s");
        let m = cx.named_tensor::<(Rows,)>("mask");
        let w = cx.named_tensor::<(Rows,)>("weights");
        (cx, [t, s], m, w)
    }

    fn run(mut cx: Box<Graph>, outs: Vec<NodeIndex>, inputs: Vec<(NodeIndex, Vec<f32>)>) -> Vec<Vec<f32>> {
        for (id, v) in inputs {
            data::set(&mut cx, id, v);
        }
        for id in &outs {
            cx.no_delete.insert(*id);
        }
        let mut h = Handles(outs);
        cx.compile(crate::backend::Passes::default(), &mut h);
        crate::testing::reference_executor(&cx).execute(&mut cx).unwrap();
        h.0.iter().map(|id| data::get(&cx, *id).unwrap().to_vec()).collect()
    }

    fn softmax(x: &[f64]) -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    /// Targets, loss and center against the definitions in f64 (gathering the masked rows as
    /// DINOv2 does, instead of weighting every row).
    #[test]
    fn ema_targets_loss_and_center_equal_the_gathered_definition() {
        let mut rng = Rng::new(5);
        let (tv, sv, cv) = (rng.uniform(ROWS * K, 2.0), rng.uniform(ROWS * K, 2.0), rng.uniform(K, 0.5));
        let (mut cx, [t, s], m, w) = graph();
        let c = cx.named_tensor::<(Const<K>,)>("c");
        let tt = cx.named_tensor::<R0>("tt");
        let q = ibot_targets(t, c, tt);
        let loss = ibot_loss(q, s, w, 0.1, 2);
        let c2 = ibot_center_update(c, t, m, 0.9, Replicas::ONE);
        let ins =
            vec![(t.id, tv.clone()), (s.id, sv.clone()), (m.id, MASK.to_vec()), (w.id, weights()), (c.id, cv.clone())];
        let got = run(cx, vec![loss.id, c2.id], [ins, vec![(tt.id, vec![0.07])]].concat());

        let row = |v: &[f32], r: usize| v[r * K..(r + 1) * K].iter().map(|x| *x as f64).collect::<Vec<f64>>();
        let masked: Vec<usize> = (0..ROWS).filter(|&r| MASK[r] > 0.0).collect();
        let mut want = 0.0;
        for &r in &masked {
            let q = softmax(&row(&tv, r).iter().zip(&cv).map(|(t, c)| (t - *c as f64) / 0.07).collect::<Vec<_>>());
            let p = softmax(&row(&sv, r).iter().map(|x| x / 0.1).collect::<Vec<_>>());
            let ce: f64 = q.iter().zip(&p).map(|(q, p)| q * p.ln()).sum();
            want -= ce * weights()[r] as f64;
        }
        want /= 2.0;
        assert!((got[0][0] as f64 - want).abs() < 1e-5 * want.abs().max(1.0), "loss {} vs {want}", got[0][0]);
        for k in 0..K {
            let mean: f64 = masked.iter().map(|&r| tv[r * K + k] as f64).sum::<f64>() / masked.len() as f64;
            let c = 0.9 * cv[k] as f64 + 0.1 * mean;
            assert!((got[1][k] as f64 - c).abs() < 1e-6, "center {k}: {} vs {c}", got[1][k]);
        }
    }

    /// Sinkhorn-Knopp over the masked rows equals `sinkhorn_knopp` on the gathered masked
    /// rows alone; the other rows are 0.
    #[test]
    fn sinkhorn_over_masked_rows_equals_it_on_the_gathered_rows() {
        let tv = Rng::new(6).uniform(ROWS * K, 1.0);
        let (mut cx, [t, _], m, _) = graph();
        let tt = cx.named_tensor::<R0>("tt");
        let q = ibot_sinkhorn_knopp(t, m, tt, 3, Replicas::ONE);
        let got = run(cx, vec![q.id], vec![(t.id, tv.clone()), (m.id, MASK.to_vec()), (tt.id, vec![0.07])]);

        let masked: Vec<usize> = (0..ROWS).filter(|&r| MASK[r] > 0.0).collect();
        let gathered: Vec<f32> = masked.iter().flat_map(|&r| tv[r * K..(r + 1) * K].to_vec()).collect();
        let mut cx = Box::new(Graph::new());
        cx.set_dyn_dim(dims::GLOBAL_ROWS, masked.len());
        let x = cx.named_tensor::<(dims::GlobalRows, Const<K>)>("x");
        let tt = cx.named_tensor::<R0>("tt");
        let want = super::super::sinkhorn_knopp(x, tt, 3, masked.len(), Replicas::ONE);
        let want = run(cx, vec![want.id], vec![(x.id, gathered), (tt.id, vec![0.07])]);
        for r in 0..ROWS {
            let g = &got[0][r * K..(r + 1) * K];
            match masked.iter().position(|&m| m == r) {
                Some(j) => {
                    let (d, i) = crate::testing::max_abs_diff(g, &want[0][j * K..(j + 1) * K]);
                    assert!(d < 1e-5, "row {r}, prototype {i}: off by {d:.2e}");
                }
                None => assert!(g.iter().all(|v| *v == 0.0), "row {r} is not masked: {g:?}"),
            }
        }
    }

    /// The loss's gradient with respect to the student's logits by finite differences.
    #[test]
    fn gradient_by_finite_differences() {
        crate::testing::check_gradients(
            "ibot loss",
            &|cx| {
                let mut rng = Rng::new(7);
                cx.set_dyn_dim(dims::PATCH_ROWS, ROWS);
                let q = cx.named_tensor::<(Rows, Const<K>)>("q");
                let s = cx.named_tensor::<(Rows, Const<K>)>("s");
                let w = cx.named_tensor::<(Rows,)>("weights");
                let loss = ibot_loss(q, s, w, 0.5, 2);
                let qv: Vec<f32> = (0..ROWS)
                    .flat_map(|_| {
                        let r = rng.uniform(K, 1.0).iter().map(|x| x.exp() as f64).collect::<Vec<_>>();
                        let n: f64 = r.iter().sum();
                        r.into_iter().map(move |x| (x / n) as f32)
                    })
                    .collect();
                crate::testing::Problem {
                    loss: loss.id,
                    vars: vec![(s.id, rng.uniform(ROWS * K, 1.0))],
                    inputs: vec![(q.id, qv), (w.id, weights())],
                }
            },
            2e-3,
            2e-2,
        );
    }
}
