//! The DINO loss: cross-entropy between the sharpened, centered teacher distribution of each
//! global view and the student distribution of every other view.
use luminal::prelude::*;

use crate::nn::log_softmax;

/// `(views, batch, K)` view of `(views * batch, K)` rows grouped by view (crops of one view
/// are consecutive, as DINO's multi-crop wrapper concatenates them).
fn by_view<V: Dimension, N: Dimension, K: Dimension>(x: GraphTensor<(N, K)>) -> GraphTensor<(V, Dyn<'b'>, K)> {
    x.reshape::<(V, Dyn<'b'>, K)>()
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
    student_global: GraphTensor<(Dyn<'g'>, K)>,
    student_local: Option<GraphTensor<(Dyn<'l'>, K)>>,
    teacher: GraphTensor<(Dyn<'g'>, K)>,
    center: GraphTensor<(K,)>,
    teacher_temp: GraphTensor<R0>,
    student_temp: f32,
    batch: usize,
    local_views: usize,
) -> GraphTensor<R0> {
    let inv_tt = teacher_temp.recip().expand::<(Dyn<'g'>, K), _>();
    let q = ((teacher - center.expand::<(Dyn<'g'>, K), Axis<0>>()) * inv_tt).softmax::<1>();
    let q = by_view::<Const<2>, _, _>(q); // (2, B, K)
    let logp_g = by_view::<Const<2>, _, _>(log_softmax(student_global * (1.0 / student_temp)));
    let q_sum = q.sum_reduce::<(Dyn<'b'>, K), Axis<0>>();
    let mut p_sum = logp_g.sum_reduce::<(Dyn<'b'>, K), Axis<0>>();
    if let Some(sl) = student_local {
        let logp_l = by_view::<Dyn<'v'>, _, _>(log_softmax(sl * (1.0 / student_temp)));
        p_sum += logp_l.sum_reduce::<(Dyn<'b'>, K), Axis<0>>();
    }
    let all_pairs = (q_sum * p_sum).sum_reduce::<R0, Axes2<0, 1>>();
    let same_view = (q * logp_g).sum_reduce::<R0, Axes3<0, 1, 2>>();
    let pairs = 2 * (2 + local_views) - 2;
    (all_pairs - same_view) * (-1.0 / (pairs * batch) as f32)
}

/// DINO's center update from the teacher's raw outputs: `c' = m c + (1 - m) mean_rows t`.
pub fn center_update<K: Dimension>(
    center: GraphTensor<(K,)>,
    teacher: GraphTensor<(Dyn<'g'>, K)>,
    momentum: f32,
    rows: usize,
) -> GraphTensor<(K,)> {
    let mean = teacher.sum_reduce::<(K,), Axis<0>>() * (1.0 / rows as f32);
    center * momentum + mean * (1.0 - momentum)
}
