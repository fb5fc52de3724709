//! The Vision Transformer backbone of DINO.
use crate::graph::dims;
use std::cell::RefCell;

use luminal::prelude::*;
use rustc_hash::FxHashMap;

use super::block::{Block, BlockOptions, BranchMasks};
use super::layer_norm::LayerNorm;
use super::mlp::Ffn;
use super::param::{Init, ParamVisitor, Parameters};
use super::patch_embed::PatchEmbed;
use super::pos_embed::{antialiased_interpolation_matrix, dino_interpolation_matrix};
use super::registers::{self, Registers};
use crate::config::Interpolation;
use crate::graph::data;

/// ViT as in DINO's `vision_transformer.py`: patch embedding, a [CLS] token, learned position
/// embeddings (interpolated for other crop sizes), pre-norm blocks and a final LayerNorm; the
/// output is the normalized [CLS] token.
///
/// Type parameters: channels `C`, patch `P`, width `D`, heads `H` of `DH` (`D = H * DH`),
/// `QKV = 3 * D`, MLP widths `F` (first layer) and `G` (hidden: `F`, or `F / 2` for SwiGLU), `CPP = C * P * P`, native token count `N0 = 1 + G0 * G0`.
/// The `vit!` macro writes them; forward calls name the crop (`IH x IW`), its patch count `NP`
/// and token count `NT = NP + 1`.
///
/// # Shapes
/// `x (B, C, IH, IW) -> (B, D)`; `cls_token (1, 1, D)`, `pos_embed (1, N0, D)`.
///
/// PyTorch equivalent: `vision_transformer.VisionTransformer(num_classes=0)` of DINO.
pub struct VisionTransformer<
    const C: usize,
    const P: usize,
    const D: usize,
    const H: usize,
    const DH: usize,
    const QKV: usize,
    const F: usize,
    const G: usize,
    const CPP: usize,
    const N0: usize,
> {
    pub cls_token: GraphTensor<R3<1, 1, D>>,
    pub pos_embed: GraphTensor<R3<1, N0, D>>,
    pub patch_embed: PatchEmbed<C, P, D, CPP>,
    pub blocks: Vec<Block<D, H, DH, QKV, F, G>>,
    pub norm: LayerNorm<D>,
    /// DINOv2's register tokens (`register_tokens (1, R, D)`), between [CLS] and the patches.
    pub registers: Option<Registers>,
    /// How `pos_embed` is resized for other crop sizes.
    pub interpolation: Interpolation,
    /// Position-embedding resampling matrices (constant inputs), one per crop grid.
    resample: RefCell<FxHashMap<(usize, usize), NodeIndex>>,
}

impl<
        const C: usize,
        const P: usize,
        const D: usize,
        const H: usize,
        const DH: usize,
        const QKV: usize,
        const F: usize,
        const G: usize,
        const CPP: usize,
        const N0: usize,
    > VisionTransformer<C, P, D, H, DH, QKV, F, G, CPP, N0>
{
    /// The native patch grid side `G0`.
    pub fn native_grid() -> usize {
        let g = ((N0 - 1) as f64).sqrt().round() as usize;
        assert_eq!(g * g + 1, N0, "N0 = 1 + G0^2");
        g
    }

    pub fn new(cx: &mut Graph, depth: usize, qkv_bias: bool, eps: f32) -> Self {
        Self::with_options(cx, depth, BlockOptions { qkv_bias, eps, layer_scale: None, ffn: Ffn::Gelu }, 0)
    }

    /// `depth` blocks built with `blocks` (the final norm takes their epsilon) and `registers`
    /// register tokens (0: none).
    pub fn with_options(cx: &mut Graph, depth: usize, blocks: BlockOptions, registers: usize) -> Self {
        Self::native_grid();
        let registers = (registers > 0)
            .then(|| Registers { id: cx.named_tensor::<R2<1, D>>("register_tokens").id, count: registers });
        VisionTransformer {
            cls_token: cx.named_tensor("cls_token"),
            pos_embed: cx.named_tensor("pos_embed"),
            patch_embed: PatchEmbed::new(cx),
            blocks: (0..depth).map(|_| Block::with_options(cx, blocks)).collect(),
            norm: LayerNorm::new(cx, blocks.eps),
            registers,
            interpolation: Interpolation::Bicubic,
            resample: RefCell::new(FxHashMap::default()),
        }
    }

    /// Resize position embeddings with `interpolation` (before any forward is built).
    pub fn with_interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }

    /// `(NP, N0)` matrix taking `pos_embed` to the patch embeddings of a `gh x gw` grid (see
    /// [`resample_matrix`]). A constant input of the graph, created once per grid.
    pub(super) fn resample_matrix<const NP: usize>(
        &self,
        cx: &mut Graph,
        gh: usize,
        gw: usize,
    ) -> GraphTensor<R2<NP, N0>> {
        let id = *self.resample.borrow_mut().entry((gh, gw)).or_insert_with(|| {
            let full = resample_matrix(Self::native_grid(), gh, gw, self.interpolation);
            assert_eq!(full.len(), NP * N0, "NP = gh * gw");
            let t = cx.named_tensor::<R2<NP, N0>>(&format!("pos_embed.resample.{gh}x{gw}"));
            data::set(cx, t.id, full);
            cx.no_delete.insert(t.id);
            t.id
        });
        GraphTensor::from_id(id, ShapeTracker::new(&[NP.into(), N0.into()]), cx)
    }

    /// Register tokens (0 without).
    pub fn register_count(&self) -> usize {
        self.registers.map_or(0, |r| r.count)
    }

    /// Token embeddings `(B, NT, D)`: [CLS], the registers (if any), then the patches, position
    /// embeddings added to [CLS] and the patches.
    pub fn tokens<B: Dimension, const IH: usize, const IW: usize, const NP: usize, const NT: usize>(
        &self,
        x: GraphTensor<(B, Const<C>, Const<IH>, Const<IW>)>,
    ) -> GraphTensor<(B, Const<NT>, Const<D>)> {
        self.tokens_masked::<B, IH, IW, NP, NT>(x, None)
    }

    /// All tokens after the last block and the final norm, `(B, NT, D)`.
    pub fn forward_features<B: Dimension, const IH: usize, const IW: usize, const NP: usize, const NT: usize>(
        &self,
        x: GraphTensor<(B, Const<C>, Const<IH>, Const<IW>)>,
    ) -> GraphTensor<(B, Const<NT>, Const<D>)> {
        self.forward_features_drop::<B, IH, IW, NP, NT>(x, &[])
    }

    /// [`forward_features`](Self::forward_features) with stochastic depth: `drop[i]` are the
    /// masks of block `i` (blocks past the end of `drop` keep every sample).
    pub fn forward_features_drop<B: Dimension, const IH: usize, const IW: usize, const NP: usize, const NT: usize>(
        &self,
        x: GraphTensor<(B, Const<C>, Const<IH>, Const<IW>)>,
        drop: &[BranchMasks<B>],
    ) -> GraphTensor<(B, Const<NT>, Const<D>)> {
        let mut t = self.tokens::<B, IH, IW, NP, NT>(x);
        for (i, b) in self.blocks.iter().enumerate() {
            t = match drop.get(i) {
                Some(m) => b.forward_drop(t, m),
                None => b.forward(t),
            };
        }
        self.norm.forward(t)
    }

    /// The normalized [CLS] token with stochastic depth (see
    /// [`forward_features_drop`](Self::forward_features_drop)), `(B, D)`.
    pub fn forward_drop<B: Dimension, const IH: usize, const IW: usize, const NP: usize, const NT: usize>(
        &self,
        x: GraphTensor<(B, Const<C>, Const<IH>, Const<IW>)>,
        drop: &[BranchMasks<B>],
    ) -> GraphTensor<(B, Const<D>)> {
        cls_of(self.forward_features_drop::<B, IH, IW, NP, NT>(x, drop))
    }

    /// The normalized [CLS] token, `(B, D)`.
    pub fn forward<B: Dimension, const IH: usize, const IW: usize, const NP: usize, const NT: usize>(
        &self,
        x: GraphTensor<(B, Const<C>, Const<IH>, Const<IW>)>,
    ) -> GraphTensor<(B, Const<D>)> {
        cls_of(self.forward_features::<B, IH, IW, NP, NT>(x))
    }

    /// The attention weights of the last block, `(B, H, NT, NT)` (DINO's
    /// `get_last_selfattention`: blocks 0..L-1 run normally, then the last block's attention
    /// on `norm1` of its input).
    pub fn last_self_attention<B: Dimension, const IH: usize, const IW: usize, const NP: usize, const NT: usize>(
        &self,
        x: GraphTensor<(B, Const<C>, Const<IH>, Const<IW>)>,
    ) -> GraphTensor<(B, Const<H>, Const<NT>, Const<NT>)> {
        let mut t = self.tokens::<B, IH, IW, NP, NT>(x);
        let (last, rest) = self.blocks.split_last().expect("at least one block");
        for b in rest {
            t = b.forward(t);
        }
        last.forward_with_weights(t).1
    }
}

/// The `(gh*gw) x (1 + g0*g0)` matrix taking `pos_embed` (\[CLS\] first) to the position
/// embeddings of the patches of a `gh x gw` grid: a selection for the native grid, DINO's
/// bicubic resampling or DINOv2's antialiased one otherwise; the [CLS] column is zero.
pub fn resample_matrix(g0: usize, gh: usize, gw: usize, interpolation: Interpolation) -> Vec<f32> {
    let n0 = 1 + g0 * g0;
    let m = if (gh, gw) == (g0, g0) {
        (0..g0 * g0).flat_map(|j| (0..g0 * g0).map(move |i| (i == j) as u8 as f32)).collect::<Vec<_>>()
    } else {
        match interpolation {
            Interpolation::Bicubic => dino_interpolation_matrix(g0, gh, gw),
            Interpolation::Antialiased => antialiased_interpolation_matrix(g0, gh, gw),
        }
    };
    let np = gh * gw;
    let mut full = vec![0f32; np * n0];
    for j in 0..np {
        full[j * n0 + 1..(j + 1) * n0].copy_from_slice(&m[j * g0 * g0..(j + 1) * g0 * g0]);
    }
    full
}

/// Patches of a CHW image, `(gh*gw, C*P*P)`, row-major over the grid, each patch laid out as
/// the `(C, P, P)` convolution kernel: what the patch embedding multiplies.
pub fn patchify(img: &[f32], c: usize, h: usize, w: usize, p: usize) -> Vec<f32> {
    assert!(h % p == 0 && w % p == 0 && img.len() == c * h * w, "a {c}x{h}x{w} image of {p} px patches");
    let (gh, gw) = (h / p, w / p);
    let mut out = Vec::with_capacity(img.len());
    for gy in 0..gh {
        for gx in 0..gw {
            for ch in 0..c {
                for y in 0..p {
                    let row = ch * h * w + (gy * p + y) * w + gx * p;
                    out.extend_from_slice(&img[row..row + p]);
                }
            }
        }
    }
    out
}

/// A ViT at any input size: the image arrives as patches (`'n'` of them, see [`patchify`])
/// with its position-embedding matrix (`'n' x N0`, see [`resample_matrix`]); tokens are
/// `'t' = 'n' + 1` (set both dynamic dims, and `'b'`, before running).
pub trait VitLayers {
    type Dim: Dimension;
    type Heads: Dimension;
    /// `C * P * P`.
    type PatchPixels: Dimension;
    /// `1 + G0^2`.
    type Native: Dimension;
    fn depth(&self) -> usize;
    /// Tokens after block `upto - 1` (no final norm), `(b, t, D)`.
    fn tokens_after(
        &self,
        patches: GraphTensor<(dims::Batch, dims::Patches, Self::PatchPixels)>,
        resample: GraphTensor<(dims::Patches, Self::Native)>,
        upto: usize,
    ) -> GraphTensor<(dims::Batch, dims::Tokens, Self::Dim)>;
    /// All tokens after the last block and the final norm.
    fn features_dyn(
        &self,
        patches: GraphTensor<(dims::Batch, dims::Patches, Self::PatchPixels)>,
        resample: GraphTensor<(dims::Patches, Self::Native)>,
    ) -> GraphTensor<(dims::Batch, dims::Tokens, Self::Dim)>;
    /// The [CLS] token after each of the last `n` blocks, each through the final norm (DINO's
    /// `get_intermediate_layers` for the linear probe), oldest first.
    fn last_cls_dyn(
        &self,
        patches: GraphTensor<(dims::Batch, dims::Patches, Self::PatchPixels)>,
        resample: GraphTensor<(dims::Patches, Self::Native)>,
        n: usize,
    ) -> Vec<GraphTensor<(dims::Batch, Self::Dim)>>;
    /// The last block's attention weights `(b, H, t, t)` (`get_last_selfattention`).
    fn last_attention_dyn(
        &self,
        patches: GraphTensor<(dims::Batch, dims::Patches, Self::PatchPixels)>,
        resample: GraphTensor<(dims::Patches, Self::Native)>,
    ) -> GraphTensor<(dims::Batch, Self::Heads, dims::Tokens, dims::Tokens)>;
}

/// The [CLS] token of tokens with a dynamic count.
fn cls_dyn<D: Dimension>(t: GraphTensor<(dims::Batch, dims::Tokens, D)>) -> GraphTensor<(dims::Batch, D)> {
    t.slice((.., ..luminal::prelude::symbolic::Expression::from(1), ..))
        .contiguous()
        .realize::<(dims::Batch, Const<1>, D)>()
        .reshape::<(dims::Batch, D)>()
}

impl<
        const C: usize,
        const P: usize,
        const D: usize,
        const H: usize,
        const DH: usize,
        const QKV: usize,
        const F: usize,
        const G: usize,
        const CPP: usize,
        const N0: usize,
    > VitLayers for VisionTransformer<C, P, D, H, DH, QKV, F, G, CPP, N0>
{
    type Dim = Const<D>;
    type Heads = Const<H>;
    type PatchPixels = Const<CPP>;
    type Native = Const<N0>;

    fn depth(&self) -> usize {
        self.blocks.len()
    }

    fn tokens_after(
        &self,
        patches: GraphTensor<(dims::Batch, dims::Patches, Const<CPP>)>,
        resample: GraphTensor<(dims::Patches, Const<N0>)>,
        upto: usize,
    ) -> GraphTensor<(dims::Batch, dims::Tokens, Const<D>)> {
        let w = self.patch_embed.weight.reshape::<R2<D, CPP>>().permute::<R2<CPP, D>, Axes2<1, 0>>();
        let x =
            patches.matmul(w) + self.patch_embed.bias.expand::<(dims::Batch, dims::Patches, Const<D>), Axes2<0, 1>>();
        let pos = resample.matmul(self.pos_embed.reshape::<R2<N0, D>>()); // (n, D)
        let x = x + pos.expand::<(dims::Batch, dims::Patches, Const<D>), Axis<0>>();
        let cls_pos =
            self.pos_embed.slice((.., ..luminal::prelude::symbolic::Expression::from(1), ..)).realize::<R3<1, 1, D>>();
        let cls =
            (self.cls_token + cls_pos).reshape::<R2<1, D>>().expand::<(dims::Batch, Const<1>, Const<D>), Axis<0>>();
        let mut t = registers::join::<_, _, dims::Tokens, D>(self.registers, cls, x);
        for b in &self.blocks[..upto] {
            t = b.forward(t);
        }
        t
    }

    fn features_dyn(
        &self,
        patches: GraphTensor<(dims::Batch, dims::Patches, Const<CPP>)>,
        resample: GraphTensor<(dims::Patches, Const<N0>)>,
    ) -> GraphTensor<(dims::Batch, dims::Tokens, Const<D>)> {
        registers::drop(self.registers, self.norm.forward(self.tokens_after(patches, resample, self.blocks.len())))
    }

    fn last_cls_dyn(
        &self,
        patches: GraphTensor<(dims::Batch, dims::Patches, Const<CPP>)>,
        resample: GraphTensor<(dims::Patches, Const<N0>)>,
        n: usize,
    ) -> Vec<GraphTensor<(dims::Batch, Const<D>)>> {
        let depth = self.blocks.len();
        let first = depth - n.min(depth);
        let mut t = self.tokens_after(patches, resample, first);
        let mut out = vec![];
        for b in &self.blocks[first..] {
            t = b.forward(t);
            out.push(cls_dyn(self.norm.forward(t)));
        }
        out
    }

    fn last_attention_dyn(
        &self,
        patches: GraphTensor<(dims::Batch, dims::Patches, Const<CPP>)>,
        resample: GraphTensor<(dims::Patches, Const<N0>)>,
    ) -> GraphTensor<(dims::Batch, Const<H>, dims::Tokens, dims::Tokens)> {
        let depth = self.blocks.len();
        let t = self.tokens_after(patches, resample, depth - 1);
        self.blocks[depth - 1].forward_with_weights(t).1
    }
}

/// The [CLS] token (position 0) of `(B, NT, D)` tokens, `(B, D)`.
pub fn cls_of<B: Dimension, const NT: usize, const D: usize>(
    t: GraphTensor<(B, Const<NT>, Const<D>)>,
) -> GraphTensor<(B, Const<D>)> {
    t.slice((.., ..luminal::prelude::symbolic::Expression::from(1), ..))
        .contiguous()
        .realize::<(B, Const<1>, Const<D>)>()
        .reshape::<(B, Const<D>)>()
}

impl<
        const C: usize,
        const P: usize,
        const D: usize,
        const H: usize,
        const DH: usize,
        const QKV: usize,
        const F: usize,
        const G: usize,
        const CPP: usize,
        const N0: usize,
    > Parameters for VisionTransformer<C, P, D, H, DH, QKV, F, G, CPP, N0>
{
    fn visit(&self, v: &mut ParamVisitor) {
        v.tensor("cls_token", self.cls_token, Init::TruncNormal { std: 0.02 });
        v.tensor("pos_embed", self.pos_embed, Init::TruncNormal { std: 0.02 });
        if let Some(r) = self.registers {
            // DINOv2: `nn.init.normal_(self.register_tokens, std=1e-6)`
            v.tensor_with_shape("register_tokens", r.id, vec![1, r.count, D], Init::TruncNormal { std: 1e-6 });
        }
        v.module("patch_embed.proj", &self.patch_embed);
        for (i, b) in self.blocks.iter().enumerate() {
            v.module(&format!("blocks.{i}"), b);
        }
        v.module("norm", &self.norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ParamSet;
    use crate::testing::{check_gradients, layer_problem, Rng};

    type Tiny = VisionTransformer<1, 2, 6, 2, 3, 18, 12, 12, 4, 5>; // 4x4 images: 2x2 grid

    #[test]
    fn gradients_native_and_resampled() {
        check_gradients(
            "vit native",
            &|cx| {
                let mut rng = Rng::new(12);
                let vit = Tiny::new(cx, 2, true, 1e-6);
                let x = cx.named_tensor::<R4<2, 1, 4, 4>>("x");
                let y = vit.forward::<Const<2>, 4, 4, 4, 5>(x);
                let p = ParamSet::of(&vit, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(32, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
        check_gradients(
            "vit 6x6 crop",
            &|cx| {
                let mut rng = Rng::new(13);
                let vit = Tiny::new(cx, 1, true, 1e-6);
                let x = cx.named_tensor::<R4<2, 1, 6, 6>>("x");
                let y = vit.forward::<Const<2>, 6, 6, 9, 10>(x);
                let p = ParamSet::of(&vit, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(72, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    #[test]
    fn gradients_with_registers_and_layer_scale() {
        check_gradients(
            "vit with 2 registers, 6x6 crop",
            &|cx| {
                let mut rng = Rng::new(14);
                let o = BlockOptions { qkv_bias: true, eps: 1e-6, layer_scale: Some(0.5), ffn: Ffn::Gelu };
                let vit = Tiny::with_options(cx, 1, o, 2);
                let x = cx.named_tensor::<R4<2, 1, 6, 6>>("x");
                // [CLS] of 1 + 2 + 9 tokens: the registers reach it through attention
                let y = vit.forward::<Const<2>, 6, 6, 9, 12>(x);
                let p = ParamSet::of(&vit, cx);
                assert_eq!(p.get("register_tokens").unwrap().shape, vec![1, 2, 6]);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(72, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    #[test]
    fn parameter_count_of_vit_small_16() {
        let mut cx = Graph::new();
        let vit = VisionTransformer::<3, 16, 384, 6, 64, 1152, 1536, 1536, 768, 197>::new(&mut cx, 12, true, 1e-6);
        let p = ParamSet::of(&vit, &mut cx);
        assert_eq!(p.numel(), 21_665_664, "ViT-S/16 backbone (DINO's count)");
        assert_eq!(p.params.len(), 150);
    }
}
