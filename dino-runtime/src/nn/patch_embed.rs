//! Patch embedding: non-overlapping `P x P` patches, linearly projected.
use luminal::op::Contiguous;
use luminal::prelude::*;

use super::param::{Init, ParamVisitor, Parameters};

/// Image to patch tokens: a stride-`P` convolution with a `P x P` kernel, computed as one
/// patch extraction (a copy) and one GEMM. `CPP` must be `C * P * P`.
///
/// # Shapes
/// `x (B, C, H, W) -> (B, (H/P)(W/P), D)`, patches in row-major order; `proj.weight
/// (D, C, P, P)`, `proj.bias (D)`.
///
/// PyTorch equivalent: timm's `PatchEmbed` (`nn.Conv2d(C, D, P, stride=P)`, flattened).
pub struct PatchEmbed<const C: usize, const P: usize, const D: usize, const CPP: usize> {
    pub weight: GraphTensor<R4<D, C, P, P>>,
    pub bias: GraphTensor<R1<D>>,
}

impl<const C: usize, const P: usize, const D: usize, const CPP: usize> PatchEmbed<C, P, D, CPP> {
    const DIMS_AGREE: () = assert!(CPP == C * P * P, "PatchEmbed<C, P, D, CPP> needs CPP = C * P * P");

    pub fn new(cx: &mut Graph) -> Self {
        #[allow(clippy::let_unit_value)]
        let _ = Self::DIMS_AGREE;
        PatchEmbed { weight: cx.named_tensor("weight"), bias: cx.named_tensor("bias") }
    }

    /// Patch tokens of a batch of images; `GH = IH / P`, `GW = IW / P`, `NP = GH * GW`.
    pub fn forward<B: Dimension, const IH: usize, const IW: usize, const NP: usize>(
        &self,
        x: GraphTensor<(B, Const<C>, Const<IH>, Const<IW>)>,
    ) -> GraphTensor<(B, Const<NP>, Const<D>)> {
        assert!(
            IH % P == 0 && IW % P == 0 && NP == (IH / P) * (IW / P),
            "image {IH}x{IW} is not a grid of {P}px patches"
        );
        let x = x.contiguous();
        let (gh, gw) = (IH / P, IW / P);
        // (B, C, GH, P, GW, P) -> (B, GH, GW, C, P, P): one strided copy (6 axes, beyond the
        // typed permutes of luminal, so the view is built directly)
        let b = x.shape.dims[x.shape.indexes[0]];
        let mut st = ShapeTracker::new(&[b, C.into(), gh.into(), P.into(), gw.into(), P.into()]);
        st.permute(&[0, 2, 4, 1, 3, 5]);
        let id = x.graph().add_op(Contiguous).input(x.id, 0, st).finish();
        let patches: GraphTensor<(B, Const<NP>, Const<CPP>)> =
            GraphTensor::from_id(id, ShapeTracker::new(&[b, NP.into(), CPP.into()]), x.graph_ref);
        let w = self.weight.reshape::<R2<D, CPP>>().permute::<R2<CPP, D>, Axes2<1, 0>>();
        patches.matmul(w) + self.bias.expand::<(B, Const<NP>, Const<D>), Axes2<0, 1>>()
    }
}

impl<const C: usize, const P: usize, const D: usize, const CPP: usize> Parameters for PatchEmbed<C, P, D, CPP> {
    fn visit(&self, v: &mut ParamVisitor) {
        // PyTorch's default Conv2d init (kaiming uniform with a = sqrt 5): U(+-1/sqrt(fan_in))
        let bound = 1.0 / (CPP as f32).sqrt();
        v.tensor("weight", self.weight, Init::Uniform { bound });
        v.tensor("bias", self.bias, Init::Uniform { bound });
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
            "patch embed",
            &|cx| {
                let mut rng = Rng::new(11);
                let pe: PatchEmbed<2, 2, 3, 8> = PatchEmbed::new(cx);
                let x = cx.named_tensor::<R4<2, 2, 4, 6>>("x");
                let y = pe.forward::<Const<2>, 4, 6, 6>(x);
                let p = ParamSet::of(&pe, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(96, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }
}
