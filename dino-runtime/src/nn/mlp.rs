//! The transformer's feed-forward block.
use luminal::prelude::*;

use super::activation::gelu;
use super::linear::Linear;
use super::param::{ParamVisitor, Parameters};

/// `fc2(gelu(fc1(x)))`.
///
/// # Shapes
/// `x (B, N, D) -> (B, N, D)`; hidden width `F`.
///
/// PyTorch equivalent: timm's `Mlp(D, F, act_layer=nn.GELU)`.
pub struct Mlp<const D: usize, const F: usize> {
    pub fc1: Linear<D, F>,
    pub fc2: Linear<F, D>,
}

impl<const D: usize, const F: usize> Mlp<D, F> {
    pub fn new(cx: &mut Graph) -> Self {
        Mlp { fc1: Linear::new(cx, true), fc2: Linear::new(cx, true) }
    }
}

impl<const D: usize, const F: usize> Parameters for Mlp<D, F> {
    fn visit(&self, v: &mut ParamVisitor) {
        v.module("fc1", &self.fc1);
        v.module("fc2", &self.fc2);
    }
}

impl<const D: usize, const F: usize, B: Dimension, N: Dimension> Module<GraphTensor<(B, N, Const<D>)>> for Mlp<D, F> {
    type Output = GraphTensor<(B, N, Const<D>)>;

    fn forward(&self, x: GraphTensor<(B, N, Const<D>)>) -> Self::Output {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ParamSet;
    use crate::testing::{check_gradients, layer_problem, Rng};

    #[test]
    fn gradients() {
        check_gradients(
            "mlp",
            &|cx| {
                let mut rng = Rng::new(7);
                let m: Mlp<4, 8> = Mlp::new(cx);
                let x = cx.named_tensor::<R3<2, 3, 4>>("x");
                let y = m.forward(x);
                let p = ParamSet::of(&m, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(24, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }
}
