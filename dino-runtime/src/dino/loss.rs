//! The DINO loss: cross-entropy between the sharpened, centered teacher distribution of each
//! global view and the student distribution of every other view.
use crate::graph::dims;
use luminal::prelude::*;

use crate::nn::log_softmax;

/// `(views, batch, K)` view of `(views * batch, K)` rows grouped by view (crops of one view
/// are consecutive, as DINO's multi-crop wrapper concatenates them).
fn by_view<V: Dimension, N: Dimension, K: Dimension>(x: GraphTensor<(N, K)>) -> GraphTensor<(V, dims::Batch, K)> {
    x.reshape::<(V, dims::Batch, K)>()
}

/// The loss of one step, in the graph (dynamic dims: `'b'` batch, `'g'` = 2 * batch global
/// rows, `'l'` = local crops * batch local rows, `'v'` local crops).
///
/// With `q_i = softmax((t_i - c) / teacher_temp)` for teacher view `i` and
/// `p_v = log_softmax(s_v / student_temp)` for student view `v`:
/// `loss = sum_{i, v != i} mean_b sum_k -q_i[b, k] p_v[b, k] / n_pairs`, `n_pairs = 2 * views - 2`.
/// Summing pairs is `sum (sum_i q_i) (sum_v p_v) - sum_i q_i p_i`: no pair is formed.
/// `teacher_temp` is a 1-element input (it follows a schedule); `center` is `(K,)`.
///
/// PyTorch equivalent: `DINOLoss.forward` of DINO's `main_dino.py`.
pub fn dino_loss<K: Dimension>(
    student_global: GraphTensor<(dims::GlobalRows, K)>,
    student_local: Option<GraphTensor<(dims::LocalRows, K)>>,
    teacher: GraphTensor<(dims::GlobalRows, K)>,
    center: GraphTensor<(K,)>,
    teacher_temp: GraphTensor<R0>,
    student_temp: f32,
    batch: usize,
    local_views: usize,
) -> GraphTensor<R0> {
    let inv_tt = teacher_temp.recip().expand::<(dims::GlobalRows, K), _>();
    let q = ((teacher - center.expand::<(dims::GlobalRows, K), Axis<0>>()) * inv_tt).softmax::<1>();
    dino_loss_of(q, student_global, student_local, student_temp, batch, local_views)
}

/// The DINO loss against given teacher targets `q` (each row a distribution over the `K`
/// prototypes: the centered, sharpened softmax of [`dino_loss`], or DINOv2's Sinkhorn-Knopp
/// assignment): the cross-entropy of every student view against every other view's target.
pub fn dino_loss_of<K: Dimension>(
    q: GraphTensor<(dims::GlobalRows, K)>,
    student_global: GraphTensor<(dims::GlobalRows, K)>,
    student_local: Option<GraphTensor<(dims::LocalRows, K)>>,
    student_temp: f32,
    batch: usize,
    local_views: usize,
) -> GraphTensor<R0> {
    let q = by_view::<Const<2>, _, _>(q); // (2, B, K)
    let logp_g = by_view::<Const<2>, _, _>(log_softmax(student_global * (1.0 / student_temp)));
    let q_sum = q.sum_reduce::<(dims::Batch, K), Axis<0>>();
    let mut p_sum = logp_g.sum_reduce::<(dims::Batch, K), Axis<0>>();
    if let Some(sl) = student_local {
        let logp_l = by_view::<dims::LocalViews, _, _>(log_softmax(sl * (1.0 / student_temp)));
        p_sum += logp_l.sum_reduce::<(dims::Batch, K), Axis<0>>();
    }
    let all_pairs = (q_sum * p_sum).sum_reduce::<R0, Axes2<0, 1>>();
    let same_view = (q * logp_g).sum_reduce::<R0, Axes3<0, 1, 2>>();
    let pairs = 2 * (2 + local_views) - 2;
    (all_pairs - same_view) * (-1.0 / (pairs * batch) as f32)
}

/// DINO's center update from the teacher's raw outputs: `c' = m c + (1 - m) mean_rows t`, the
/// mean over the global batch: a replicated step sums this rank's `rows` with every other
/// rank's first (DINO's `dist.all_reduce` of the teacher's batch sum).
pub fn center_update<K: Dimension>(
    center: GraphTensor<(K,)>,
    teacher: GraphTensor<(dims::GlobalRows, K)>,
    momentum: f32,
    rows: usize,
    replicas: crate::dist::Replicas,
) -> GraphTensor<(K,)> {
    let mut sum = teacher.sum_reduce::<(K,), Axis<0>>();
    if replicas.reduce {
        sum = crate::dist::op::all_reduce_tensor(sum, "center");
    }
    let mean = sum * (1.0 / (rows * replicas.ranks) as f32);
    center * momentum + mean * (1.0 - momentum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{data, Handles};
    use crate::testing::Rng;

    const B: usize = 2;
    const L: usize = 3;
    const K: usize = 5;

    fn log_softmax_row(x: &[f64]) -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::MIN, f64::max);
        let lse = x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        x.iter().map(|v| v - m - lse).collect()
    }

    /// `DINOLoss.forward` in f64: average over (teacher view iq, student view v != iq) of the
    /// batch-mean cross-entropy; with `skip_same = false`, every pair (the classic mistake).
    fn reference(s: &[Vec<f64>], t: &[Vec<f64>], c: &[f64], tt: f64, st: f64, skip_same: bool) -> f64 {
        let views = s.len() / B;
        let (mut total, mut terms) = (0.0, 0);
        for iq in 0..2 {
            for v in 0..views {
                if skip_same && v == iq {
                    continue;
                }
                let mut mean = 0.0;
                for b in 0..B {
                    let z: Vec<f64> = t[iq * B + b].iter().zip(c).map(|(x, c)| (x - c) / tt).collect();
                    let q: Vec<f64> = log_softmax_row(&z).iter().map(|v| v.exp()).collect();
                    let p = log_softmax_row(&s[v * B + b].iter().map(|x| x / st).collect::<Vec<_>>());
                    mean += q.iter().zip(&p).map(|(q, p)| -q * p).sum::<f64>() / B as f64;
                }
                total += mean;
                terms += 1;
            }
        }
        total / terms as f64
    }

    #[test]
    fn loss_averages_every_pair_except_the_same_view() {
        let mut rng = Rng::new(3);
        let mut cx = Graph::new();
        cx.set_dyn_dim(dims::BATCH, B);
        cx.set_dyn_dim(dims::GLOBAL_ROWS, 2 * B);
        cx.set_dyn_dim(dims::LOCAL_ROWS, L * B);
        cx.set_dyn_dim(dims::LOCAL_VIEWS, L);
        let sg = cx.named_tensor::<(dims::GlobalRows, Const<K>)>("sg");
        let sl = cx.named_tensor::<(dims::LocalRows, Const<K>)>("sl");
        let t = cx.named_tensor::<(dims::GlobalRows, Const<K>)>("t");
        let c = cx.named_tensor::<(Const<K>,)>("c");
        let tt = cx.named_tensor::<R0>("tt");
        let loss = dino_loss(sg, Some(sl), t, c, tt, 0.1, B, L);
        let vals = [
            rng.uniform(2 * B * K, 1.0),
            rng.uniform(L * B * K, 1.0),
            rng.uniform(2 * B * K, 1.0),
            rng.uniform(K, 0.3),
        ];
        for (id, v) in [sg.id, sl.id, t.id, c.id].into_iter().zip(vals.iter()) {
            data::set(&mut cx, id, v.clone());
        }
        data::set(&mut cx, tt.id, vec![0.07]);
        cx.no_delete.insert(loss.id);
        let mut outs = Handles(vec![loss.id]);
        cx.compile(crate::backend::Passes::default(), &mut outs);
        crate::testing::reference_executor(&cx).execute(&mut cx).unwrap();
        let got = data::get(&cx, outs.0[0]).unwrap()[0] as f64;

        let rows = |v: &[f32]| v.chunks(K).map(|r| r.iter().map(|x| *x as f64).collect()).collect::<Vec<Vec<f64>>>();
        let mut s = rows(&vals[0]);
        s.extend(rows(&vals[1]));
        let (tr, cr) = (rows(&vals[2]), vals[3].iter().map(|x| *x as f64).collect::<Vec<_>>());
        let want = reference(&s, &tr, &cr, 0.07, 0.1, true);
        let all_pairs = reference(&s, &tr, &cr, 0.07, 0.1, false);
        assert!((got - want).abs() < 1e-5 * want.abs(), "loss {got}, reference {want}");
        assert!((want - all_pairs).abs() > 1e-3, "the test must tell the two rules apart");
    }
}
