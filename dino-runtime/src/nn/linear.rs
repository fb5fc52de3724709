//! Fully connected layer.
use luminal::prelude::*;

use super::param::{Init, ParamVisitor, Parameters};

/// `y = x W^T + b`.
///
/// # Shapes
/// `x (..., I) -> y (..., O)`; `weight (O, I)`, `bias (O)`.
///
/// PyTorch equivalent: `torch.nn.Linear(I, O, bias)`; initialized as timm's ViT does
/// (weight truncated normal, std 0.02; bias zero).
pub struct Linear<const I: usize, const O: usize> {
    pub weight: GraphTensor<R2<O, I>>,
    pub bias: Option<GraphTensor<R1<O>>>,
}

impl<const I: usize, const O: usize> Linear<I, O> {
    pub fn new(cx: &mut Graph, bias: bool) -> Self {
        Linear { weight: cx.named_tensor("weight"), bias: bias.then(|| cx.named_tensor("bias")) }
    }

    /// `W^T` as a view: `(I, O)`.
    fn weight_t(&self) -> GraphTensor<R2<I, O>> {
        self.weight.permute::<R2<I, O>, Axes2<1, 0>>()
    }
}

impl<const I: usize, const O: usize> Parameters for Linear<I, O> {
    fn visit(&self, v: &mut ParamVisitor) {
        v.tensor("weight", self.weight, Init::TruncNormal { std: 0.02 });
        if let Some(b) = self.bias {
            v.tensor("bias", b, Init::Zeros);
        }
    }
}

impl<const I: usize, const O: usize, B: Dimension> Module<GraphTensor<(B, Const<I>)>> for Linear<I, O> {
    type Output = GraphTensor<(B, Const<O>)>;

    fn forward(&self, x: GraphTensor<(B, Const<I>)>) -> Self::Output {
        let y = x.matmul(self.weight_t()); // (B, O)
        match self.bias {
            Some(b) => y + b.expand::<(B, Const<O>), Axis<0>>(),
            None => y,
        }
    }
}

impl<const I: usize, const O: usize, B: Dimension, N: Dimension> Module<GraphTensor<(B, N, Const<I>)>>
    for Linear<I, O>
{
    type Output = GraphTensor<(B, N, Const<O>)>;

    fn forward(&self, x: GraphTensor<(B, N, Const<I>)>) -> Self::Output {
        let y = x.matmul(self.weight_t()); // (B, N, O)
        match self.bias {
            Some(b) => y + b.expand::<(B, N, Const<O>), Axes2<0, 1>>(),
            None => y,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ParamSet;
    use crate::testing::{check_gradients, layer_problem, Rng};

    #[test]
    fn gradients_2d_and_3d() {
        check_gradients(
            "linear 2d",
            &|cx| {
                let mut rng = Rng::new(1);
                let l: Linear<4, 3> = Linear::new(cx, true);
                let x = cx.named_tensor::<R2<5, 4>>("x");
                let y = l.forward(x);
                let p = ParamSet::of(&l, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(20, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
        check_gradients(
            "linear 3d no bias",
            &|cx| {
                let mut rng = Rng::new(2);
                let l: Linear<4, 3> = Linear::new(cx, false);
                let x = cx.named_tensor::<R3<2, 5, 4>>("x");
                let y = l.forward(x);
                let p = ParamSet::of(&l, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(40, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    #[test]
    fn parameter_names_and_shapes_follow_pytorch() {
        let mut cx = Graph::new();
        let l: Linear<4, 3> = Linear::new(&mut cx, true);
        let p = ParamSet::of(&l, &mut cx);
        let got: Vec<(String, Vec<usize>)> = p.params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        assert_eq!(got, vec![("weight".to_string(), vec![3, 4]), ("bias".to_string(), vec![3])]);
    }
}
