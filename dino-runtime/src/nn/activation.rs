//! Activations and normalized exponentials built from luminal primitives.
use luminal::prelude::*;

use crate::graph::with_gradient;

/// Abramowitz & Stegun 7.1.26: `erf(z) ~ 1 - t (a1 + a2 t + ... + a5 t^4) exp(-z^2)` with
/// `t = 1 / (1 + p z)`, absolute error below 1.5e-7 for every z >= 0.
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];

/// `erfc(z) = 1 - erf(z)` for `z >= 0`, from primitives.
fn erfc_nonneg<S: Shape>(z: GraphTensor<S>) -> GraphTensor<S> {
    let t = (z * ERF_P + 1.0).recip();
    let mut p = t * ERF_A[4];
    for &c in ERF_A[..4].iter().rev() {
        p = (p + c) * t;
    }
    p * (z * z * -1.0).exp()
}

/// Exact (erf) GELU: `x Phi(x) = x/2 (1 + erf(x / sqrt 2))`, with
/// `Phi(x) = [x >= 0] - sign(x)/2 erfc(|x| / sqrt 2)` so only `erfc` of a non-negative
/// argument is needed. Within 2e-7 * (1 + |x|) of the exact function (test below).
///
/// The gradient is the exact derivative `Phi(x) + x phi(x)` (as PyTorch computes it), not the
/// derivative of the erfc approximation: see [`with_gradient`].
///
/// PyTorch equivalent: `torch.nn.GELU()` (`approximate='none'`).
pub fn gelu<S: Shape>(x: GraphTensor<S>) -> GraphTensor<S> {
    let zero = x.graph().constant(0.0).expand();
    let negative = x.less_than(zero); // 1 where x < 0
    let step = -negative + 1.0; // 1 where x >= 0
    let sign = step * 2.0 - 1.0;
    let abs = x * sign;
    let tail = erfc_nonneg(abs * std::f32::consts::FRAC_1_SQRT_2) * 0.5;
    let cdf = step - sign * tail; // Phi(x)
    let pdf = (x * x * -0.5).exp() * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
    with_gradient(x, x * cdf, cdf + x * pdf)
}

/// SiLU (swish): `x sigmoid(x)`, `sigmoid(x) = 1 / (1 + exp(-x))`.
///
/// The gradient is given, `s (1 + x (1 - s))`: the chain rule through `exp(-x)` would multiply
/// 0 by infinity for large negative `x` (see [`with_gradient`]).
///
/// PyTorch equivalent: `torch.nn.functional.silu(x)`.
pub fn silu<S: Shape>(x: GraphTensor<S>) -> GraphTensor<S> {
    let s = ((x * -1.0).exp() + 1.0).recip();
    with_gradient(x, x * s, s * (x * (-s + 1.0) + 1.0))
}

/// Softmax over the last axis of a `(B, K)` tensor: `exp(x - max) / sum exp(x - max)`.
///
/// PyTorch equivalent: `x.softmax(-1)`.
pub fn softmax<B: Dimension, K: Dimension>(x: GraphTensor<(B, K)>) -> GraphTensor<(B, K)> {
    x.softmax::<1>()
}

/// Log-softmax over the last axis of a `(B, K)` tensor: `x - max - ln sum exp(x - max)`.
///
/// PyTorch equivalent: `torch.nn.functional.log_softmax(x, -1)`.
pub fn log_softmax<B: Dimension, K: Dimension>(x: GraphTensor<(B, K)>) -> GraphTensor<(B, K)> {
    let shifted = x - x.max_reduce::<(B,), Axis<1>>().expand::<(B, K), Axis<1>>();
    let lse = shifted.exp().sum_reduce::<(B,), Axis<1>>().ln();
    shifted - lse.expand::<(B, K), Axis<1>>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::data;
    use crate::graph::dims;
    use crate::nn::ParamSet;
    use crate::testing::{check_gradients, layer_problem, Rng};

    fn exact_gelu(x: f64) -> f64 {
        0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
    }

    #[test]
    fn gelu_matches_the_exact_function() {
        let n = 20001;
        let xs: Vec<f32> = (0..n).map(|i| -10.0 + 20.0 * i as f32 / (n - 1) as f32).collect();
        let mut cx = Graph::new();
        let x = cx.named_tensor::<(dims::Patches,)>("x");
        cx.set_dyn_dim(dims::PATCHES, n);
        let y = gelu(x).retrieve();
        data::set(&mut cx, x.id, xs.clone());
        cx.execute();
        let got = data::get(&cx, y.id).unwrap();
        let mut worst = 0f64;
        for (x, g) in xs.iter().zip(got) {
            let err = (*g as f64 - exact_gelu(*x as f64)).abs() / (1.0 + x.abs() as f64);
            worst = worst.max(err);
        }
        println!("gelu max error {worst:.3e} relative to 1 + |x|");
        assert!(worst < 2e-7, "gelu error {worst:.3e} (relative to 1 + |x|)");
    }

    #[test]
    fn gelu_gradients() {
        check_gradients(
            "gelu",
            &|cx| {
                let mut rng = Rng::new(4);
                let x = cx.named_tensor::<R2<3, 8>>("x");
                let y = gelu(x);
                layer_problem(cx, &ParamSet::default(), vec![(x.id, rng.uniform(24, 3.0))], y, 1.0, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    #[test]
    fn silu_matches_the_function_and_its_derivative() {
        let xs: Vec<f32> = (0..=400).map(|i| -100.0 + 0.5 * i as f32).collect();
        let mut cx = Graph::new();
        let x = cx.named_tensor::<(dims::Patches,)>("x");
        cx.set_dyn_dim(dims::PATCHES, xs.len());
        let y = silu(x).retrieve();
        data::set(&mut cx, x.id, xs.clone());
        cx.execute();
        for (x, g) in xs.iter().zip(data::get(&cx, y.id).unwrap()) {
            let want = *x as f64 / (1.0 + (-*x as f64).exp());
            assert!((*g as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "silu({x}) = {g}, want {want}");
        }
        check_gradients(
            "silu",
            &|cx| {
                let mut rng = Rng::new(8);
                let x = cx.named_tensor::<R2<3, 8>>("x");
                let y = silu(x);
                layer_problem(cx, &ParamSet::default(), vec![(x.id, rng.uniform(24, 4.0))], y, 1.0, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    #[test]
    fn softmax_and_log_softmax_gradients() {
        check_gradients(
            "softmax",
            &|cx| {
                let mut rng = Rng::new(5);
                let x = cx.named_tensor::<R2<3, 5>>("x");
                let y = softmax(x);
                layer_problem(cx, &ParamSet::default(), vec![(x.id, rng.uniform(15, 2.0))], y, 1.0, &mut rng)
            },
            2e-3,
            2e-2,
        );
        check_gradients(
            "log_softmax",
            &|cx| {
                let mut rng = Rng::new(6);
                let x = cx.named_tensor::<R2<3, 5>>("x");
                let y = log_softmax(x);
                layer_problem(cx, &ParamSet::default(), vec![(x.id, rng.uniform(15, 2.0))], y, 1.0, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }
}
