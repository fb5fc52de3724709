//! DINOv2's Sinkhorn-Knopp centering of the teacher: instead of subtracting a running center
//! and taking a softmax, the teacher's scores of the whole global batch are turned into an
//! assignment in which every prototype receives the same total weight and every image weight
//! 1, by alternating normalizations.
//!
//! ```text
//!   Q = exp(t / teacher_temp)                          (rows x K: every global crop of every rank)
//!   Q /= ΣQ                                            ← all-reduced over the ranks
//!   repeat n:  Q /= Σ_rows Q (per prototype); Q /= K   ← all-reduced over the ranks
//!              Q /= Σ_K Q (per image);        Q /= B   (B = rows of every rank)
//!   Q *= B                                             each image's row sums to 1
//! ```
//!
//! PyTorch equivalent: `DINOLoss.sinkhorn_knopp_teacher` of DINOv2's `dino_clstoken_loss.py`
//! (there `Q` is transposed, `K x B`). No gradient flows through it (the teacher is not
//! trained), and, as in DINOv2, `exp` is taken of the raw scaled scores: no maximum is
//! subtracted, since a per-image shift would change the result and a global one needs a
//! maximum over the ranks.
use luminal::prelude::*;

use crate::dist::op::all_reduce_tensor;
use crate::dist::Replicas;
use crate::graph::dims;

/// The Sinkhorn-Knopp assignment of the teacher's outputs `teacher` (this rank's `rows` global
/// crops; `K` prototypes) at temperature `temp` (1 element), `iterations` times; with
/// `replicas.reduce` every sum over images runs over the global batch of every rank.
pub fn sinkhorn_knopp<K: Dimension>(
    teacher: GraphTensor<(dims::GlobalRows, K)>,
    temp: GraphTensor<R0>,
    iterations: usize,
    rows: usize,
    replicas: Replicas,
) -> GraphTensor<(dims::GlobalRows, K)> {
    let k =
        crate::graph::view::logical_dims(&teacher.shape)[1].to_usize().expect("a constant number of prototypes") as f32;
    let b = (rows * replicas.ranks) as f32;
    let q = (teacher * temp.recip().expand::<(dims::GlobalRows, K), _>()).exp();
    let total = over_ranks(q.sum_reduce::<R0, Axes2<0, 1>>(), replicas, "sinkhorn.total");
    let mut q = q * total.recip().expand::<(dims::GlobalRows, K), _>();
    for _ in 0..iterations {
        // every prototype's total weight 1/K
        let per_prototype = over_ranks(q.sum_reduce::<(K,), Axis<0>>(), replicas, "sinkhorn.prototypes");
        q = q * per_prototype.recip().expand::<(dims::GlobalRows, K), Axis<0>>() * (1.0 / k);
        // every image's total weight 1/B
        let per_image = q.sum_reduce::<(dims::GlobalRows,), Axis<1>>();
        q = q * per_image.recip().expand::<(dims::GlobalRows, K), Axis<1>>() * (1.0 / b);
    }
    q * b
}

/// `x` summed over the ranks when the step is replicated.
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
    use crate::graph::{data, Handles};
    use crate::testing::Rng;

    const R: usize = 6;
    const K: usize = 5;

    /// `sinkhorn_knopp_teacher` in f64 on `t` (`rows x K`, row-major).
    fn reference(t: &[f64], temp: f64, iterations: usize) -> Vec<f64> {
        let mut q: Vec<f64> = t.iter().map(|x| (x / temp).exp()).collect();
        let total: f64 = q.iter().sum();
        q.iter_mut().for_each(|x| *x /= total);
        let rows = t.len() / K;
        for _ in 0..iterations {
            for k in 0..K {
                let s: f64 = (0..rows).map(|r| q[r * K + k]).sum();
                (0..rows).for_each(|r| q[r * K + k] /= s * K as f64);
            }
            for r in 0..rows {
                let s: f64 = q[r * K..(r + 1) * K].iter().sum();
                q[r * K..(r + 1) * K].iter_mut().for_each(|x| *x /= s * rows as f64);
            }
        }
        q.iter().map(|x| x * rows as f64).collect()
    }

    fn run(t: &[f32], temp: f32, iterations: usize) -> Vec<f32> {
        run_on::<K>(t, temp, iterations, Replicas::ONE, None)
    }

    /// The graph of [`sinkhorn_knopp`] on `t` (`rows x P`), run once (with `group`'s ranks).
    fn run_on<const P: usize>(
        t: &[f32],
        temp: f32,
        iterations: usize,
        replicas: Replicas,
        group: Option<std::sync::Arc<dyn crate::dist::Collective>>,
    ) -> Vec<f32> {
        let rows = t.len() / P;
        let mut cx = Graph::new();
        cx.set_dyn_dim(dims::GLOBAL_ROWS, rows);
        let x = cx.named_tensor::<(dims::GlobalRows, Const<P>)>("t");
        let tt = cx.named_tensor::<R0>("temp");
        let q = sinkhorn_knopp(x, tt, iterations, rows, replicas);
        cx.no_delete.insert(q.id);
        data::set(&mut cx, x.id, t.to_vec());
        data::set(&mut cx, tt.id, vec![temp]);
        let mut h = Handles(vec![q.id]);
        cx.compile(crate::backend::Passes::default(), &mut h);
        let mut ex = crate::testing::reference_executor(&cx);
        if let Some(g) = group {
            ex.set_collective(g).unwrap();
        }
        ex.execute(&mut cx).unwrap();
        data::get(&cx, h.0[0]).unwrap().to_vec()
    }

    /// Against DINOv2's `sinkhorn_knopp_teacher` in float64 (tests/reference/make_fixtures.py),
    /// on one process and over 2 ranks (threads) that hold 6 of the 12 rows each: the sums over
    /// images are all-reduced, so each rank's rows are those of the whole batch.
    #[test]
    fn equals_dinov2_on_one_rank_and_over_two() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/sinkhorn.safetensors");
        let f = crate::tensors::TensorFile::load(path).expect("fixture from tests/reference/make_fixtures.py");
        let t = &f.get("teacher").unwrap().data;
        for (iterations, key) in [(1, "q1"), (3, "q3")] {
            let want = &f.get(key).unwrap().data;
            let got = run_on::<32>(t, 0.07, iterations, Replicas::ONE, None);
            let (d, i) = crate::testing::max_abs_diff(&got, want);
            assert!(d < 1e-5, "{iterations} iterations: element {i} off by {d:.2e}");
            let ranks = crate::dist::LocalGroup::ranks(2, std::time::Duration::from_secs(30));
            let halves: Vec<Vec<f32>> = std::thread::scope(|sc| {
                let jobs: Vec<_> = ranks
                    .into_iter()
                    .enumerate()
                    .map(|(r, g)| {
                        let part = t[r * 6 * 32..(r + 1) * 6 * 32].to_vec();
                        sc.spawn(move || {
                            run_on::<32>(&part, 0.07, iterations, Replicas::of(2), Some(std::sync::Arc::new(g)))
                        })
                    })
                    .collect();
                jobs.into_iter().map(|j| j.join().unwrap()).collect()
            });
            let (d, i) = crate::testing::max_abs_diff(&halves.concat(), want);
            assert!(d < 1e-5, "{iterations} iterations over 2 ranks: element {i} off by {d:.2e}");
        }
    }

    #[test]
    fn rows_are_assignments_and_prototypes_share_the_batch() {
        let t = Rng::new(4).uniform(R * K, 1.0);
        let t64: Vec<f64> = t.iter().map(|x| *x as f64).collect();
        for iterations in [1, 3] {
            let got = run(&t, 0.07, iterations);
            let want = reference(&t64, 0.07, iterations);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() < 1e-5 * (1.0 + w.abs()),
                    "{iterations} iterations, element {i}: {g} vs {w}"
                );
            }
            // each image's weights sum to 1; each prototype receives ~rows / K in all
            for r in 0..R {
                let s: f32 = got[r * K..(r + 1) * K].iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "row {r} sums to {s}");
            }
            let col: f32 = (0..R).map(|r| got[r * K]).sum();
            assert!((col - R as f32 / K as f32).abs() < 0.2, "prototype 0 receives {col}");
        }
    }
}
