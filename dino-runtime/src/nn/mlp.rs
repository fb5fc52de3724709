//! The transformer's feed-forward block: DINO's GELU MLP or DINOv2's SwiGLU.
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;

use super::activation::{gelu, silu};
use super::linear::Linear;
use super::param::{ParamVisitor, Parameters};
pub use crate::config::Ffn;

/// GELU: `fc2(gelu(fc1(x)))`, `F = G` the hidden width. SwiGLU: `w3(silu(x1) * x2)` where
/// `[x1, x2] = w12(x)` split in halves, `F = 2 G`.
///
/// ```text
///   GELU    x ─ fc1 (D→F) ─ gelu ──────────────────── fc2 (G→D)
///   SwiGLU  x ─ w12 (D→2G) ─┬─ [..G] ─ silu ─┐
///                           └─ [G..] ────────┴─ * ─ w3 (G→D)
/// ```
///
/// # Shapes
/// `x (B, N, D) -> (B, N, D)`; first layer's width `F`, second layer's input width `G`.
///
/// PyTorch equivalent: timm's `Mlp(D, F, act_layer=nn.GELU)`; DINOv2's `SwiGLUFFNFused`
/// (timm's `SwiGLUPacked`: the same layers named `fc1`/`fc2`).
pub struct Mlp<const D: usize, const F: usize, const G: usize> {
    pub fc1: Linear<D, F>,
    pub fc2: Linear<G, D>,
    pub ffn: Ffn,
}

impl<const D: usize, const F: usize, const G: usize> Mlp<D, F, G> {
    /// # Panics
    /// When `F` is not `ffn`'s first width for `G` (a declaration's macro never builds one).
    pub fn new(cx: &mut Graph, ffn: Ffn) -> Self {
        assert_eq!(F, ffn.packed(G), "{ffn} MLP: first width {F} for hidden width {G}");
        Mlp { fc1: Linear::new(cx, true), fc2: Linear::new(cx, true), ffn }
    }
}

impl<const D: usize, const F: usize, const G: usize> Parameters for Mlp<D, F, G> {
    fn visit(&self, v: &mut ParamVisitor) {
        // DINOv2's official names for SwiGLU
        let (first, second) = match self.ffn {
            Ffn::Gelu => ("fc1", "fc2"),
            Ffn::SwiGlu => ("w12", "w3"),
        };
        v.module(first, &self.fc1);
        v.module(second, &self.fc2);
    }
}

impl<const D: usize, const F: usize, const G: usize, B: Dimension, N: Dimension> Module<GraphTensor<(B, N, Const<D>)>>
    for Mlp<D, F, G>
{
    type Output = GraphTensor<(B, N, Const<D>)>;

    fn forward(&self, x: GraphTensor<(B, N, Const<D>)>) -> Self::Output {
        let h = self.fc1.forward(x);
        let hidden = match self.ffn {
            Ffn::Gelu => gelu(h).realize::<(B, N, Const<G>)>(),
            Ffn::SwiGlu => {
                let (g, f) = (Expression::from(G), Expression::from(F));
                // explicit ends: luminal's `contiguous` takes an open-ended slice's length as
                // the whole dim's
                let x1 = h.slice((.., .., ..g)).contiguous().realize::<(B, N, Const<G>)>();
                let x2 = h.slice((.., .., g..f)).contiguous().realize::<(B, N, Const<G>)>();
                silu(x1) * x2
            }
        };
        self.fc2.forward(hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::data;
    use crate::nn::ParamSet;
    use crate::testing::{check_gradients, layer_problem, Rng};

    #[test]
    fn gradients() {
        check_gradients(
            "mlp",
            &|cx| {
                let mut rng = Rng::new(7);
                let m: Mlp<4, 8, 8> = Mlp::new(cx, Ffn::Gelu);
                let x = cx.named_tensor::<R3<2, 3, 4>>("x");
                let y = m.forward(x);
                let p = ParamSet::of(&m, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(24, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    #[test]
    fn swiglu_gradients() {
        check_gradients(
            "swiglu mlp",
            &|cx| {
                let mut rng = Rng::new(17);
                let m: Mlp<4, 12, 6> = Mlp::new(cx, Ffn::SwiGlu);
                let x = cx.named_tensor::<R3<2, 3, 4>>("x");
                let y = m.forward(x);
                let p = ParamSet::of(&m, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(24, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    /// SwiGLU against its definition computed by hand: the first half gated by SiLU, times
    /// the second half, through `w3`; the parameters carry DINOv2's names.
    #[test]
    fn swiglu_gates_the_first_half() {
        let mut cx = Graph::new();
        let m: Mlp<2, 4, 2> = Mlp::new(&mut cx, Ffn::SwiGlu);
        let x = cx.named_tensor::<R3<1, 1, 2>>("x");
        let y = m.forward(x).retrieve();
        let p = ParamSet::of(&m, &mut cx);
        let names: Vec<_> = p.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["w12.weight", "w12.bias", "w3.weight", "w3.bias"]);
        let w12 = [0.5f32, -1.0, 2.0, 0.25, -0.5, 1.5, 1.0, 1.0]; // (4, 2) row-major
        let b12 = [0.1f32, -0.2, 0.3, 0.0];
        let w3 = [1.0f32, -2.0, 0.5, 0.75]; // (2, 2)
        let b3 = [0.05f32, -0.05];
        for (name, v) in [("w12.weight", &w12[..]), ("w12.bias", &b12), ("w3.weight", &w3), ("w3.bias", &b3)] {
            data::set(&mut cx, p.params.iter().find(|q| q.name == name).unwrap().id, v.to_vec());
        }
        let xs = [0.7f32, -1.3];
        data::set(&mut cx, x.id, xs.to_vec());
        cx.execute();
        let h: Vec<f64> = (0..4).map(|r| (w12[2 * r] * xs[0] + w12[2 * r + 1] * xs[1] + b12[r]) as f64).collect();
        let silu = |v: f64| v / (1.0 + (-v).exp());
        let gated = [silu(h[0]) * h[2], silu(h[1]) * h[3]];
        let want: Vec<f64> =
            (0..2).map(|o| w3[2 * o] as f64 * gated[0] + w3[2 * o + 1] as f64 * gated[1] + b3[o] as f64).collect();
        let got = data::get(&cx, y.id).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
}
