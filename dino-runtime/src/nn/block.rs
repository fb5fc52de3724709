//! The pre-norm transformer block of ViT.
use luminal::prelude::*;

use super::attention::Attention;
use super::layer_norm::LayerNorm;
use super::layer_scale::LayerScale;
use super::mlp::{Ffn, Mlp};
use super::param::{ParamVisitor, Parameters};

/// Stochastic-depth masks of one block's two residual branches (attention, MLP), each
/// `(B,)` or absent (always kept).
pub type BranchMasks<B> = [Option<GraphTensor<(B,)>>; 2];

/// How a block is built, beyond its sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockOptions {
    pub qkv_bias: bool,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// LayerScale on both residual branches, `gamma` starting at this value; none: no scale.
    pub layer_scale: Option<f32>,
    /// The feed-forward layer (`F = ffn.packed(G)`).
    pub ffn: Ffn,
}

/// `x = x + attn(norm1(x)); x = x + mlp(norm2(x))`; with LayerScale,
/// `x = x + ls1(attn(norm1(x))); x = x + ls2(mlp(norm2(x)))`.
///
/// # Shapes
/// `x (B, N, D) -> (B, N, D)`.
///
/// PyTorch equivalent: the `Block` of DINO's `vision_transformer.py`; stochastic depth
/// (`DropPath`) is [`forward_drop`](Block::forward_drop) with per-sample masks fed as inputs.
pub struct Block<const D: usize, const H: usize, const DH: usize, const QKV: usize, const F: usize, const G: usize> {
    pub norm1: LayerNorm<D>,
    pub attn: Attention<D, H, DH, QKV>,
    pub norm2: LayerNorm<D>,
    pub mlp: Mlp<D, F, G>,
    /// LayerScale of the attention and MLP branches (`ls1`, `ls2`), when declared.
    pub ls: Option<[LayerScale<D>; 2]>,
}

impl<const D: usize, const H: usize, const DH: usize, const QKV: usize, const F: usize, const G: usize>
    Block<D, H, DH, QKV, F, G>
{
    pub fn new(cx: &mut Graph, qkv_bias: bool, eps: f32) -> Self {
        Self::with_options(cx, BlockOptions { qkv_bias, eps, layer_scale: None, ffn: Ffn::Gelu })
    }

    pub fn with_options(cx: &mut Graph, o: BlockOptions) -> Self {
        Block {
            norm1: LayerNorm::new(cx, o.eps),
            attn: Attention::new(cx, o.qkv_bias),
            norm2: LayerNorm::new(cx, o.eps),
            mlp: Mlp::new(cx, o.ffn),
            ls: o.layer_scale.map(|init| [LayerScale::new(cx, init), LayerScale::new(cx, init)]),
        }
    }

    /// Branch `i`'s output through its LayerScale, if any.
    fn scale<B: Dimension, N: Dimension>(
        &self,
        i: usize,
        y: GraphTensor<(B, N, Const<D>)>,
    ) -> GraphTensor<(B, N, Const<D>)> {
        match &self.ls {
            Some(ls) => ls[i].forward(y),
            None => y,
        }
    }

    /// With stochastic depth: each residual branch `i` (0 attention, 1 MLP) is multiplied by
    /// its per-sample mask `masks[i]` when given (DINO's `drop_path`: 0 for a dropped sample,
    /// `1 / keep_prob` for a kept one).
    pub fn forward_drop<B: Dimension, N: Dimension>(
        &self,
        x: GraphTensor<(B, N, Const<D>)>,
        masks: &BranchMasks<B>,
    ) -> GraphTensor<(B, N, Const<D>)> {
        let scaled = |y: GraphTensor<(B, N, Const<D>)>, m: Option<GraphTensor<(B,)>>| match m {
            Some(m) => y * m.expand::<(B, N, Const<D>), Axes2<1, 2>>(),
            None => y,
        };
        let x = x + scaled(self.scale(0, self.attn.forward(self.norm1.forward(x))), masks[0]);
        x + scaled(self.scale(1, self.mlp.forward(self.norm2.forward(x))), masks[1])
    }

    /// Output and the attention weights of this block, `(B, H, N, N)`.
    pub fn forward_with_weights<B: Dimension, N: Dimension>(
        &self,
        x: GraphTensor<(B, N, Const<D>)>,
    ) -> (GraphTensor<(B, N, Const<D>)>, GraphTensor<(B, Const<H>, N, N)>) {
        let (a, w) = self.attn.forward_with_weights(self.norm1.forward(x));
        let x = x + self.scale(0, a);
        (x + self.scale(1, self.mlp.forward(self.norm2.forward(x))), w)
    }
}

impl<const D: usize, const H: usize, const DH: usize, const QKV: usize, const F: usize, const G: usize> Parameters
    for Block<D, H, DH, QKV, F, G>
{
    fn visit(&self, v: &mut ParamVisitor) {
        // timm's state_dict order: norm1, attn, ls1, norm2, mlp, ls2
        v.module("norm1", &self.norm1);
        v.module("attn", &self.attn);
        if let Some(ls) = &self.ls {
            v.module("ls1", &ls[0]);
        }
        v.module("norm2", &self.norm2);
        v.module("mlp", &self.mlp);
        if let Some(ls) = &self.ls {
            v.module("ls2", &ls[1]);
        }
    }
}

impl<
        const D: usize,
        const H: usize,
        const DH: usize,
        const QKV: usize,
        const F: usize,
        const G: usize,
        B: Dimension,
        N: Dimension,
    > Module<GraphTensor<(B, N, Const<D>)>> for Block<D, H, DH, QKV, F, G>
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
            "block",
            &|cx| {
                let mut rng = Rng::new(9);
                let b: Block<6, 2, 3, 18, 12, 12> = Block::new(cx, true, 1e-6);
                let x = cx.named_tensor::<R3<2, 4, 6>>("x");
                let y = b.forward(x);
                let p = ParamSet::of(&b, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(48, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    #[test]
    fn gradients_with_layer_scale() {
        check_gradients(
            "block with layer scale",
            &|cx| {
                let mut rng = Rng::new(10);
                let o = BlockOptions { qkv_bias: true, eps: 1e-6, layer_scale: Some(0.5), ffn: Ffn::Gelu };
                let b: Block<6, 2, 3, 18, 12, 12> = Block::with_options(cx, o);
                let x = cx.named_tensor::<R3<2, 4, 6>>("x");
                let y = b.forward(x);
                let p = ParamSet::of(&b, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(48, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    /// DINOv2's block: LayerScale and a SwiGLU feed-forward (`w12 (2G, D)`, `w3 (D, G)`).
    #[test]
    fn gradients_with_swiglu_and_layer_scale() {
        check_gradients(
            "block with swiglu",
            &|cx| {
                let mut rng = Rng::new(12);
                let o = BlockOptions { qkv_bias: true, eps: 1e-6, layer_scale: Some(0.5), ffn: Ffn::SwiGlu };
                let b: Block<6, 2, 3, 18, 16, 8> = Block::with_options(cx, o);
                let x = cx.named_tensor::<R3<2, 4, 6>>("x");
                let y = b.forward(x);
                let p = ParamSet::of(&b, cx);
                assert_eq!(p.get("mlp.w12.weight").unwrap().shape, vec![16, 6]);
                assert_eq!(p.get("mlp.w3.weight").unwrap().shape, vec![6, 8]);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(48, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    #[test]
    fn layer_scale_keys_sit_where_timm_puts_them() {
        let mut cx = Graph::new();
        let o = BlockOptions { qkv_bias: false, eps: 1e-6, layer_scale: Some(1e-5), ffn: Ffn::Gelu };
        let b: Block<6, 2, 3, 18, 12, 12> = Block::with_options(&mut cx, o);
        let p = ParamSet::of(&b, &mut cx);
        let keys: Vec<&str> = p.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            keys,
            [
                "norm1.weight",
                "norm1.bias",
                "attn.qkv.weight",
                "attn.proj.weight",
                "attn.proj.bias",
                "ls1.gamma",
                "norm2.weight",
                "norm2.bias",
                "mlp.fc1.weight",
                "mlp.fc1.bias",
                "mlp.fc2.weight",
                "mlp.fc2.bias",
                "ls2.gamma"
            ]
        );
        assert_eq!(p.get("ls2.gamma").unwrap().shape, vec![6]);
    }

    #[test]
    fn parameter_keys_follow_the_reference() {
        let mut cx = Graph::new();
        let b: Block<6, 2, 3, 18, 12, 12> = Block::new(&mut cx, true, 1e-6);
        let p = ParamSet::of(&b, &mut cx);
        let keys: Vec<&str> = p.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            keys,
            [
                "norm1.weight",
                "norm1.bias",
                "attn.qkv.weight",
                "attn.qkv.bias",
                "attn.proj.weight",
                "attn.proj.bias",
                "norm2.weight",
                "norm2.bias",
                "mlp.fc1.weight",
                "mlp.fc1.bias",
                "mlp.fc2.weight",
                "mlp.fc2.bias"
            ]
        );
        assert_eq!(p.get("attn.qkv.weight").unwrap().shape, vec![18, 6]);
    }
}
