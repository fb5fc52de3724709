//! The DINO loss: cross-entropy between the sharpened, centered teacher distribution of each
//! global view and the student distribution of every other view.
use luminal::prelude::*;

use crate::nn::log_softmax;

/// Temperatures and view counts of the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DinoLossConfig {
    pub student_temp: f32,
    /// Views seen by the teacher (DINO: the 2 global crops).
    pub global_views: usize,
    /// Views seen only by the student.
    pub local_views: usize,
}

/// The loss of one step, in the graph.
///
/// With `q_i = softmax((t_i - c) / teacher_temp)` for teacher view `i` and
/// `p_v = log_softmax(s_v / student_temp)` for student view `v`:
/// `loss = sum_{i, v != i} mean_b sum_k -q_i[b, k] p_v[b, k] / n_pairs`,
/// `n_pairs = global * (global + local) - global`. The cross terms of all pairs are one product
/// `(G, B*K) x (B*K, V)`, the skipped same-view terms are subtracted.
///
/// `teacher_temp` is a 1-element input (it follows a schedule); `center` is `(K,)`.
///
/// PyTorch equivalent: `DINOLoss.forward` of DINO's `main_dino.py`.
#[allow(clippy::too_many_arguments)]
pub fn dino_loss<const GB: usize, const LB: usize, const K: usize, const G: usize, const L: usize, const BK: usize>(
    cfg: &DinoLossConfig,
    student_global: GraphTensor<(Const<GB>, Const<K>)>,
    student_local: Option<GraphTensor<(Const<LB>, Const<K>)>>,
    teacher: GraphTensor<(Const<GB>, Const<K>)>,
    center: GraphTensor<(Const<K>,)>,
    teacher_temp: GraphTensor<R0>,
) -> GraphTensor<R0> {
    assert_eq!(G, cfg.global_views);
    assert_eq!(GB % G, 0);
    let batch = GB / G;
    assert_eq!(BK, batch * K, "BK = batch * K");
    let inv_tt = teacher_temp.recip().expand::<(Const<GB>, Const<K>), _>();
    let centered = (teacher - center.expand::<(Const<GB>, Const<K>), Axis<0>>()) * inv_tt;
    let q = centered.softmax::<1>().reshape::<(Const<G>, Const<BK>)>(); // (G, B*K)
    let logp_g = log_softmax(student_global * (1.0 / cfg.student_temp)).reshape::<(Const<G>, Const<BK>)>();
    // all global x global pairs, minus the same-view ones
    let cross_g = q.matmul(logp_g.permute::<(Const<BK>, Const<G>), Axes2<1, 0>>()); // (G, G)
    let same = (q * logp_g).sum_reduce::<R0, Axes2<0, 1>>();
    let mut total = cross_g.sum_reduce::<R0, Axes2<0, 1>>() - same;
    if let Some(sl) = student_local {
        assert_eq!(LB, L * batch, "LB = local views * batch");
        let logp_l = log_softmax(sl * (1.0 / cfg.student_temp)).reshape::<(Const<L>, Const<BK>)>();
        let cross_l = q.matmul(logp_l.permute::<(Const<BK>, Const<L>), Axes2<1, 0>>()); // (G, L)
        total += cross_l.sum_reduce::<R0, Axes2<0, 1>>();
    }
    let pairs = G * (G + cfg.local_views) - G;
    total * (-1.0 / (pairs * batch) as f32)
}

/// DINO's center update from the teacher's raw outputs: `c' = m c + (1 - m) mean_b t`.
pub fn center_update<const GB: usize, const K: usize>(
    center: GraphTensor<(Const<K>,)>,
    teacher: GraphTensor<(Const<GB>, Const<K>)>,
    momentum: f32,
) -> GraphTensor<(Const<K>,)> {
    let mean = teacher.sum_reduce::<(Const<K>,), Axis<0>>() * (1.0 / GB as f32);
    center * momentum + mean * (1.0 - momentum)
}
