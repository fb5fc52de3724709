//! LayerScale: a learned per-channel scale of a residual branch.
use luminal::prelude::*;

use super::param::{Init, ParamVisitor, Parameters};

/// `y = x * gamma`, `gamma` over the last axis, initialized to a small constant so each
/// residual branch starts close to the identity (CaiT; the blocks of DINOv2 and DINOv3 use
/// `1e-5`).
///
/// # Shapes
/// `x (B, N, D) -> y (B, N, D)`; `gamma (D)`.
///
/// PyTorch equivalent: timm's `LayerScale(D, init_values)` (`ls1`, `ls2` of a `Block`), whose
/// parameter is `gamma`, as in DINOv2's `layers/layer_scale.py`.
pub struct LayerScale<const D: usize> {
    pub gamma: GraphTensor<R1<D>>,
    /// The value every element of `gamma` starts at.
    pub init: f32,
}

impl<const D: usize> LayerScale<D> {
    pub fn new(cx: &mut Graph, init: f32) -> Self {
        LayerScale { gamma: cx.named_tensor("gamma"), init }
    }

    pub fn forward<B: Dimension, N: Dimension>(
        &self,
        x: GraphTensor<(B, N, Const<D>)>,
    ) -> GraphTensor<(B, N, Const<D>)> {
        x * self.gamma.expand::<(B, N, Const<D>), Axes2<0, 1>>()
    }
}

impl<const D: usize> Parameters for LayerScale<D> {
    fn visit(&self, v: &mut ParamVisitor) {
        v.tensor("gamma", self.gamma, Init::Constant { value: self.init });
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
            "layer_scale",
            &|cx| {
                let mut rng = Rng::new(4);
                let ls: LayerScale<5> = LayerScale::new(cx, 0.3);
                let x = cx.named_tensor::<R3<2, 3, 5>>("x");
                let y = ls.forward(x);
                let p = ParamSet::of(&ls, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(30, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    #[test]
    fn starts_at_its_init_value_under_timms_name() {
        let mut cx = Graph::new();
        let ls: LayerScale<4> = LayerScale::new(&mut cx, 1e-5);
        let p = ParamSet::of(&ls, &mut cx);
        assert_eq!(p.params.len(), 1);
        assert_eq!((p.params[0].name.as_str(), p.params[0].shape.as_slice()), ("gamma", &[4][..]));
        p.init(&mut cx, 0);
        assert_eq!(crate::graph::data::get(&cx, ls.gamma.id).unwrap(), &[1e-5f32; 4][..]);
    }
}
