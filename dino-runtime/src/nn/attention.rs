//! Multi-head self-attention with a fused qkv projection.
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;

use super::linear::Linear;
use super::param::{ParamVisitor, Parameters};

/// Multi-head self-attention: `proj(softmax(q k^T / sqrt(Dh)) v)` with `q, k, v` from one
/// `qkv` projection whose rows are `[q; k; v]`, each split into `H` heads of `DH`.
///
/// `QKV` must be `3 * D` and `D` must be `H * DH` (checked when building; the macro DSL
/// writes these for you).
///
/// # Shapes
/// `x (B, N, D) -> (B, N, D)`; attention weights `(B, H, N, N)`.
///
/// PyTorch equivalent: the `Attention` of DINO's `vision_transformer.py` (timm's, returning
/// the attention weights too).
pub struct Attention<const D: usize, const H: usize, const DH: usize, const QKV: usize> {
    pub qkv: Linear<D, QKV>,
    pub proj: Linear<D, D>,
}

impl<const D: usize, const H: usize, const DH: usize, const QKV: usize> Attention<D, H, DH, QKV> {
    const DIMS_AGREE: () =
        assert!(D == H * DH && QKV == 3 * D, "Attention<D, H, DH, QKV> needs D = H * DH and QKV = 3 * D");

    pub fn new(cx: &mut Graph, qkv_bias: bool) -> Self {
        #[allow(clippy::let_unit_value)]
        let _ = Self::DIMS_AGREE;
        Attention { qkv: Linear::new(cx, qkv_bias), proj: Linear::new(cx, true) }
    }

    /// Output and attention weights (softmaxed, per head).
    pub fn forward_with_weights<B: Dimension, N: Dimension>(
        &self,
        x: GraphTensor<(B, N, Const<D>)>,
    ) -> (GraphTensor<(B, N, Const<D>)>, GraphTensor<(B, Const<H>, N, N)>) {
        // q, k, v through row blocks of the fused qkv weight: slicing the weight (a view)
        // rather than the (B, N, 3D) activation leaves nothing to copy or concatenate.
        let part = |i: usize| -> GraphTensor<(B, Const<H>, N, Const<DH>)> {
            let rows = Expression::from(i * D)..Expression::from((i + 1) * D);
            let w = self.qkv.weight.slice((rows.clone(), ..)).realize::<R2<D, D>>(); // (D, D)
            let y = x.matmul(w.permute::<R2<D, D>, Axes2<1, 0>>()); // (B, N, D)
            let y = match self.qkv.bias {
                Some(b) => y + b.slice((rows,)).realize::<R1<D>>().expand::<(B, N, Const<D>), Axes2<0, 1>>(),
                None => y,
            };
            y.reshape::<(B, N, Const<H>, Const<DH>)>().permute::<_, Axes4<0, 2, 1, 3>>()
            // (B, H, N, Dh)
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let scale = (DH as f32).powf(-0.5);
        let scores = q.matmul(k.permute::<(B, Const<H>, Const<DH>, N), Axes4<0, 1, 3, 2>>()) * scale; // (B, H, N, N)
        let attn = scores.softmax::<3>();
        let out = attn
            .matmul(v) // (B, H, N, Dh)
            .permute::<(B, N, Const<H>, Const<DH>), Axes4<0, 2, 1, 3>>()
            .reshape::<(B, N, Const<D>)>();
        (self.proj.forward(out), attn)
    }
}

impl<const D: usize, const H: usize, const DH: usize, const QKV: usize> Parameters for Attention<D, H, DH, QKV> {
    fn visit(&self, v: &mut ParamVisitor) {
        v.module("qkv", &self.qkv);
        v.module("proj", &self.proj);
    }
}

impl<const D: usize, const H: usize, const DH: usize, const QKV: usize, B: Dimension, N: Dimension>
    Module<GraphTensor<(B, N, Const<D>)>> for Attention<D, H, DH, QKV>
{
    type Output = GraphTensor<(B, N, Const<D>)>;

    fn forward(&self, x: GraphTensor<(B, N, Const<D>)>) -> Self::Output {
        self.forward_with_weights(x).0
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
            "attention",
            &|cx| {
                let mut rng = Rng::new(8);
                let a: Attention<6, 2, 3, 18> = Attention::new(cx, true);
                let x = cx.named_tensor::<R3<2, 4, 6>>("x");
                let y = a.forward(x);
                let p = ParamSet::of(&a, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(48, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }
}
