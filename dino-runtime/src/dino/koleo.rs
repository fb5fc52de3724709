//! DINOv2's KoLeo regularizer: the Kozachenko-Leonenko entropy estimate of the student's
//! [CLS] features, which spreads a batch's features over the sphere.
//!
//! ```text
//!   x (N, D) ─ L2-normalize ─┬─ x xᵀ ─ diagonal to -1 ─ row max ─ one-hot (detached) ─┐
//!                            │                                                       ▼
//!                            ├──────────────────────────────────── nearest = onehot · x
//!                            └─ d_i = ‖x_i - nearest_i + ε‖₂ ─ loss = -mean_i ln(d_i + ε)
//! ```
use luminal::prelude::*;

use crate::graph::{data, detach, dims};

/// `eps` of DINOv2's `KoLeoLoss` (its normalization, its pairwise distance and its log).
pub const KOLEO_EPS: f32 = 1e-8;

/// The `(N, N)` identity, a constant input of the graph.
pub fn identity<const N: usize>(cx: &mut Graph) -> GraphTensor<R2<N, N>> {
    let eye = cx.named_tensor::<R2<N, N>>("koleo.eye");
    data::set(cx, eye.id, identity_values(N));
    cx.no_delete.insert(eye.id);
    eye
}

fn identity_values(n: usize) -> Vec<f32> {
    (0..n * n).map(|i| (i % (n + 1) == 0) as u8 as f32).collect()
}

/// `-mean_i ln(‖x̂_i - x̂_nn(i) + ε‖₂ + ε)` over the `N` rows of `x`, `x̂ = x / max(‖x‖, ε)`,
/// `nn(i)` the other row of largest inner product with row `i`. The nearest-neighbour choice
/// is a constant of the step (as PyTorch's `argmax` indexing is); the gradient reaches both
/// rows of each pair. `eye` is the `(N, N)` identity ([`identity`]).
///
/// PyTorch equivalent: `KoLeoLoss.forward` of DINOv2 (`dinov2/loss/koleo_loss.py`).
pub fn koleo_loss<const N: usize, D: Dimension>(
    x: GraphTensor<(Const<N>, D)>,
    eye: GraphTensor<R2<N, N>>,
) -> GraphTensor<R0> {
    let norm = (x * x).sum_reduce::<(Const<N>,), Axis<1>>().sqrt().max_f32(KOLEO_EPS);
    let xn = x / norm.expand::<(Const<N>, D), Axis<1>>();
    let dots = xn.matmul(xn.permute::<(D, Const<N>), Axes2<1, 0>>());
    // the diagonal (1 for unit rows) to -1: below every other inner product
    let dots = detach(dots) * (-eye + 1.0) - eye;
    let best = dots.max_reduce::<(Const<N>,), Axis<1>>().expand::<R2<N, N>, Axis<1>>();
    let onehot = detach(-dots.less_than(best) + 1.0);
    let nearest = onehot.matmul(xn);
    let diff = xn - nearest + KOLEO_EPS;
    let d = (diff * diff).sum_reduce::<(Const<N>,), Axis<1>>().sqrt();
    (d + KOLEO_EPS).ln().sum_reduce::<R0, Axis<0>>() * (-1.0 / N as f32)
}

/// KoLeo of each global view's rows, summed over the two views (DINOv2 applies it to each
/// chunk of the student's global [CLS] features): `(2 * batch, D)` rows, view-major as the
/// multi-crop wrapper lays them out. `eye` is the `(batch, batch)` identity ([`identity_dyn`]).
pub fn koleo_per_view<D: Dimension>(
    x: GraphTensor<(dims::GlobalRows, D)>,
    eye: GraphTensor<(dims::Batch, dims::Batch)>,
    batch: usize,
) -> GraphTensor<R0> {
    let x = x.reshape::<(Const<2>, dims::Batch, D)>();
    let eye = eye.expand::<(Const<2>, dims::Batch, dims::Batch), Axis<0>>();
    let norm = (x * x).sum_reduce::<(Const<2>, dims::Batch), Axis<2>>().sqrt().max_f32(KOLEO_EPS);
    let xn = x / norm.expand::<(Const<2>, dims::Batch, D), Axis<2>>();
    let dots = xn.matmul(xn.permute::<(Const<2>, D, dims::Batch), Axes3<0, 2, 1>>());
    let dots = detach(dots) * (-eye + 1.0) - eye;
    let best =
        dots.max_reduce::<(Const<2>, dims::Batch), Axis<2>>().expand::<(Const<2>, dims::Batch, dims::Batch), Axis<2>>();
    let onehot = detach(-dots.less_than(best) + 1.0);
    let nearest = onehot.matmul(xn);
    let diff = xn - nearest + KOLEO_EPS;
    let d = (diff * diff).sum_reduce::<(Const<2>, dims::Batch), Axis<2>>().sqrt();
    (d + KOLEO_EPS).ln().sum_reduce::<R0, Axes2<0, 1>>() * (-1.0 / batch as f32)
}

/// The `(batch, batch)` identity for [`koleo_per_view`], a constant input of the graph.
pub fn identity_dyn(cx: &mut Graph, batch: usize) -> GraphTensor<(dims::Batch, dims::Batch)> {
    let eye = cx.named_tensor::<(dims::Batch, dims::Batch)>("koleo.eye");
    data::set(cx, eye.id, identity_values(batch));
    cx.no_delete.insert(eye.id);
    eye
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Handles;
    use crate::tensors::TensorFile;
    use crate::testing::{check_gradients, Problem, Rng};

    /// Against DINOv2's `KoLeoLoss` in float64 (tests/reference/make_fixtures.py): the loss
    /// and its gradient for 8 random 16-dim rows, one row a near-copy of another (a pair much
    /// closer than the rest, where KoLeo pushes hardest).
    #[test]
    fn equals_dinov2s_koleo_loss() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/koleo.safetensors");
        let f = TensorFile::load(path).expect("fixture from tests/reference/make_fixtures.py");
        let mut cx = Graph::new();
        let x = cx.named_tensor::<R2<8, 16>>("x");
        let eye = identity::<8>(&mut cx);
        let loss = koleo_loss(x, eye);
        let g = crate::autograd::backward(&mut cx, loss.id, &[x.id]).unwrap();
        data::set(&mut cx, x.id, f.get("x").unwrap().data.clone());
        cx.keep_tensors(vec![loss.id, g[0].id]);
        let mut outs = Handles(vec![loss.id, g[0].id]);
        cx.compile(crate::backend::Passes::default(), &mut outs);
        crate::testing::reference_executor(&cx).execute(&mut cx).unwrap();
        let got = data::get(&cx, outs.0[0]).unwrap()[0];
        let want = f.get("loss").unwrap().data[0];
        assert!((got - want).abs() <= 1e-5 * want.abs(), "loss {got}, DINOv2's {want}");
        let (gg, gw) = (data::get(&cx, outs.0[1]).unwrap(), &f.get("grad").unwrap().data);
        let err = gg.iter().zip(gw).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = gw.iter().map(|v| v.abs()).fold(0f32, f32::max);
        assert!(err <= 1e-4 * scale, "gradient max abs error {err:.2e} (largest {scale:.2e})");
    }

    /// Two global views of 4 rows: the per-view form is the sum of each view's KoLeo.
    #[test]
    fn per_view_sums_the_views() {
        let mut rng = Rng::new(23);
        let v = rng.uniform(2 * 4 * 6, 1.0);
        let mut cx = Graph::new();
        cx.set_dyn_dim(dims::BATCH, 4);
        cx.set_dyn_dim(dims::GLOBAL_ROWS, 8);
        let x = cx.named_tensor::<(dims::GlobalRows, Const<6>)>("x");
        let eye = identity_dyn(&mut cx, 4);
        let both = koleo_per_view(x, eye, 4);
        let (a, b) = (cx.named_tensor::<R2<4, 6>>("a"), cx.named_tensor::<R2<4, 6>>("b"));
        let eye4 = identity::<4>(&mut cx);
        let apart = koleo_loss(a, eye4) + koleo_loss(b, eye4);
        data::set(&mut cx, x.id, v.clone());
        data::set(&mut cx, a.id, v[..24].to_vec());
        data::set(&mut cx, b.id, v[24..].to_vec());
        cx.keep_tensors(vec![both.id, apart.id]);
        let mut outs = Handles(vec![both.id, apart.id]);
        cx.compile(crate::backend::Passes::default(), &mut outs);
        crate::testing::reference_executor(&cx).execute(&mut cx).unwrap();
        let (p, q) = (data::get(&cx, outs.0[0]).unwrap()[0], data::get(&cx, outs.0[1]).unwrap()[0]);
        assert!((p - q).abs() <= 1e-6 * q.abs().max(1.0), "{p} vs {q}");
    }

    #[test]
    fn gradients() {
        check_gradients(
            "koleo",
            &|cx| {
                // well-separated rows: a small step does not change any nearest neighbour
                let mut rng = Rng::new(21);
                let x = cx.named_tensor::<R2<5, 4>>("x");
                let eye = identity::<5>(cx);
                let loss = koleo_loss(x, eye);
                Problem {
                    loss: loss.id,
                    vars: vec![(x.id, rng.uniform(20, 2.0))],
                    inputs: vec![(eye.id, identity_values(5))],
                }
            },
            2e-3,
            2e-2,
        );
    }
}
