//! Layer normalization over the last axis.
use luminal::prelude::*;

use super::param::{Init, ParamVisitor, Parameters};

/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, statistics over the last axis
/// (biased variance).
///
/// # Shapes
/// `x (..., D) -> y (..., D)`; `weight (D)`, `bias (D)`.
///
/// PyTorch equivalent: `torch.nn.LayerNorm(D, eps)` (DINO's ViT uses eps 1e-6).
pub struct LayerNorm<const D: usize> {
    pub weight: GraphTensor<R1<D>>,
    pub bias: GraphTensor<R1<D>>,
    pub eps: f32,
}

impl<const D: usize> LayerNorm<D> {
    pub fn new(cx: &mut Graph, eps: f32) -> Self {
        LayerNorm { weight: cx.named_tensor("weight"), bias: cx.named_tensor("bias"), eps }
    }
}

impl<const D: usize> Parameters for LayerNorm<D> {
    fn visit(&self, v: &mut ParamVisitor) {
        v.tensor("weight", self.weight, Init::Ones);
        v.tensor("bias", self.bias, Init::Zeros);
    }
}

impl<const D: usize, B: Dimension> Module<GraphTensor<(B, Const<D>)>> for LayerNorm<D> {
    type Output = GraphTensor<(B, Const<D>)>;

    fn forward(&self, x: GraphTensor<(B, Const<D>)>) -> Self::Output {
        x.layer_norm::<1, _>(self.eps) * self.weight.expand::<(B, Const<D>), Axis<0>>()
            + self.bias.expand::<(B, Const<D>), Axis<0>>()
    }
}

impl<const D: usize, B: Dimension, N: Dimension> Module<GraphTensor<(B, N, Const<D>)>> for LayerNorm<D> {
    type Output = GraphTensor<(B, N, Const<D>)>;

    fn forward(&self, x: GraphTensor<(B, N, Const<D>)>) -> Self::Output {
        x.layer_norm::<2, _>(self.eps) * self.weight.expand::<(B, N, Const<D>), Axes2<0, 1>>()
            + self.bias.expand::<(B, N, Const<D>), Axes2<0, 1>>()
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
            "layer norm",
            &|cx| {
                let mut rng = Rng::new(3);
                let ln: LayerNorm<6> = LayerNorm::new(cx, 1e-6);
                let x = cx.named_tensor::<R3<2, 3, 6>>("x");
                let y = ln.forward(x);
                let p = ParamSet::of(&ln, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(36, 2.0))], y, 1.0, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }
}
