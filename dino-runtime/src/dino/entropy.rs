//! The teacher's entropies a DINO step reports: the mean entropy of its per-image target
//! distributions and the entropy of their batch mean (collapse shows as the first going to 0
//! with the second, or both going to ln K). The batch mean is over every rank's images.
use luminal::prelude::*;

use crate::graph::dims;
use crate::nn::log_softmax;

/// Mean per-row entropy of the targets `q` (rows of distributions) over this rank's `rows`,
/// and the entropy of their mean over the rows of every rank.
pub(super) fn target_entropies<K: Dimension>(
    q: GraphTensor<(dims::GlobalRows, K)>,
    rows: usize,
    replicas: crate::dist::Replicas,
) -> (GraphTensor<R0>, GraphTensor<R0>) {
    let h = (q * (q + 1e-12).ln()).sum_reduce::<R0, Axes2<0, 1>>() * (-1.0 / rows as f32);
    let mut sum = q.sum_reduce::<(K,), Axis<0>>();
    if replicas.reduce {
        sum = crate::dist::op::all_reduce_tensor(sum, "teacher_mean");
    }
    let mean = sum * (1.0 / (rows * replicas.ranks) as f32);
    let hm = (mean * (mean + 1e-12).ln()).sum_reduce::<R0, Axis<0>>() * -1.0;
    (h, hm)
}

/// Mean per-row entropy of `softmax((t - c) / temp)` (over this rank's `rows`) and the entropy
/// of its row mean (over the rows of every rank).
pub(super) fn teacher_entropies<K: Dimension>(
    t: GraphTensor<(dims::GlobalRows, K)>,
    center: GraphTensor<(K,)>,
    temp: GraphTensor<R0>,
    rows: usize,
    replicas: crate::dist::Replicas,
) -> (GraphTensor<R0>, GraphTensor<R0>) {
    let z = (t - center.expand::<(dims::GlobalRows, K), Axis<0>>()) * temp.recip().expand::<(dims::GlobalRows, K), _>();
    let q = z.softmax::<1>();
    let h = (q * log_softmax(z)).sum_reduce::<R0, Axes2<0, 1>>() * (-1.0 / rows as f32);
    let mut sum = q.sum_reduce::<(K,), Axis<0>>();
    if replicas.reduce {
        sum = crate::dist::op::all_reduce_tensor(sum, "teacher_mean");
    }
    let mean = sum * (1.0 / (rows * replicas.ranks) as f32);
    let hm = (mean * (mean + 1e-12).ln()).sum_reduce::<R0, Axis<0>>() * -1.0;
    (h, hm)
}
