//! The ViT forward iBOT needs (DINOv2's `prepare_tokens_with_masks` and its
//! `x_norm_patchtokens`): masked patches replaced by a learned mask token, and the patch
//! tokens returned beside [CLS].
//!
//! ```text
//!   x ─ patch_embed ─┬─ × (1 - m) ─┐
//!   mask_token (1,D) ┴─ × m ───────┴─ + ─ + pos_embed ─ [CLS, registers, patches] ─ blocks ─ norm
//!                                                                     ├─ [CLS]       (B, D)
//!                                                                     └─ patches     (B, NP, D)
//! ```
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;

use super::block::BranchMasks;
use super::registers;
use super::vit::{cls_of, VisionTransformer};

/// A mask over the patches of each crop, `(B, NP)`, 1 where the patch is masked, and the token
/// that replaces masked patches, `(1, D)`.
pub type PatchMask<B, const NP: usize, const D: usize> = (GraphTensor<(B, Const<NP>)>, GraphTensor<R2<1, D>>);

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
    /// [`tokens`](Self::tokens) with the patch embeddings of masked patches replaced by the
    /// mask token before the position embeddings are added (as DINOv2 does).
    pub fn tokens_masked<B: Dimension, const IH: usize, const IW: usize, const NP: usize, const NT: usize>(
        &self,
        x: GraphTensor<(B, Const<C>, Const<IH>, Const<IW>)>,
        mask: Option<PatchMask<B, NP, D>>,
    ) -> GraphTensor<(B, Const<NT>, Const<D>)> {
        assert_eq!(NT, NP + 1 + self.register_count(), "NT = NP + 1 + registers");
        let mut patches = self.patch_embed.forward::<B, IH, IW, NP>(x); // (B, NP, D)
        if let Some((m, token)) = mask {
            let m = m.expand::<(B, Const<NP>, Const<D>), Axis<2>>();
            let token = token.reshape::<(Const<D>,)>().expand::<(B, Const<NP>, Const<D>), Axes2<0, 1>>();
            patches = patches * (-m + 1.0) + token * m;
        }
        let m = self.resample_matrix::<NP>(x.graph(), IH / P, IW / P);
        let pos = m.matmul(self.pos_embed.reshape::<R2<N0, D>>()); // (NP, D)
        let patches = patches + pos.expand::<(B, Const<NP>, Const<D>), Axis<0>>();
        let cls_pos = self.pos_embed.slice((.., ..Expression::from(1), ..)).realize::<R3<1, 1, D>>();
        let cls = (self.cls_token + cls_pos).reshape::<R2<1, D>>().expand::<(B, Const<1>, Const<D>), Axis<0>>();
        registers::join(self.registers, cls, patches)
    }

    /// The normalized [CLS] `(B, D)` and patch tokens `(B, NP, D)` (registers left out) of
    /// crops, masked by `mask` when given, with stochastic depth `drop` (see
    /// [`forward_features_drop`](Self::forward_features_drop)).
    pub fn forward_tokens_drop<B: Dimension, const IH: usize, const IW: usize, const NP: usize, const NT: usize>(
        &self,
        x: GraphTensor<(B, Const<C>, Const<IH>, Const<IW>)>,
        mask: Option<PatchMask<B, NP, D>>,
        drop: &[BranchMasks<B>],
    ) -> (GraphTensor<(B, Const<D>)>, GraphTensor<(B, Const<NP>, Const<D>)>) {
        let mut t = self.tokens_masked::<B, IH, IW, NP, NT>(x, mask);
        for (i, b) in self.blocks.iter().enumerate() {
            t = match drop.get(i) {
                Some(m) => b.forward_drop(t, m),
                None => b.forward(t),
            };
        }
        let t = self.norm.forward(t);
        let first = 1 + self.register_count();
        let patches =
            t.slice((.., Expression::from(first)..Expression::from(NT), ..))
                .contiguous()
                .realize::<(B, Const<NP>, Const<D>)>();
        (cls_of(t), patches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{data, Handles};
    use crate::nn::block::BlockOptions;
    use crate::nn::mlp::Ffn;
    use crate::nn::ParamSet;
    use crate::testing::{check_gradients, layer_problem, Rng};

    type Tiny = VisionTransformer<1, 2, 6, 2, 3, 18, 12, 12, 4, 10>; // 6x6 images: 3x3 grid

    /// Masking nothing is the plain forward; the patch tokens are the features' tokens after
    /// [CLS] and the registers.
    #[test]
    fn unmasked_tokens_are_the_features() {
        let mut rng = Rng::new(21);
        let mut cx = Graph::new();
        let o = BlockOptions { qkv_bias: true, eps: 1e-6, layer_scale: None, ffn: Ffn::Gelu };
        let vit = Tiny::with_options(&mut cx, 2, o, 2);
        let x = cx.named_tensor::<R4<2, 1, 6, 6>>("x");
        let m = cx.named_tensor::<R2<2, 9>>("m");
        let token = cx.named_tensor::<R2<1, 6>>("mask_token");
        let all = vit.forward_features::<Const<2>, 6, 6, 9, 12>(x);
        let (cls, patches) = vit.forward_tokens_drop::<Const<2>, 6, 6, 9, 12>(x, Some((m, token)), &[]);
        let p = ParamSet::of(&vit, &mut cx);
        p.init(&mut cx, 3);
        data::set(&mut cx, x.id, rng.uniform(72, 1.0));
        data::set(&mut cx, m.id, vec![0.0; 18]);
        data::set(&mut cx, token.id, rng.uniform(6, 1.0));
        let mut outs = Handles(vec![all.id, cls.id, patches.id]);
        for id in &outs.0 {
            cx.no_delete.insert(*id);
        }
        cx.compile(crate::backend::Passes::default(), &mut outs);
        crate::testing::reference_executor(&cx).execute(&mut cx).unwrap();
        let all = data::get(&cx, outs.0[0]).unwrap().to_vec();
        let (cls, patches) = (data::get(&cx, outs.0[1]).unwrap(), data::get(&cx, outs.0[2]).unwrap());
        for b in 0..2 {
            let row = &all[b * 12 * 6..(b + 1) * 12 * 6];
            assert_eq!(&cls[b * 6..(b + 1) * 6], &row[..6]);
            assert_eq!(&patches[b * 54..(b + 1) * 54], &row[3 * 6..]);
        }
    }

    /// Gradients reach the mask token through masked patches, and the parameters through both.
    #[test]
    fn gradients_through_the_mask_token() {
        check_gradients(
            "vit masked, 3x3 grid",
            &|cx| {
                let mut rng = Rng::new(22);
                let vit = Tiny::new(cx, 1, true, 1e-6);
                let x = cx.named_tensor::<R4<2, 1, 6, 6>>("x");
                let m = cx.named_tensor::<R2<2, 9>>("m");
                let token = cx.named_tensor::<R2<1, 6>>("mask_token");
                let (cls, patches) = vit.forward_tokens_drop::<Const<2>, 6, 6, 9, 10>(x, Some((m, token)), &[]);
                let y = cls + patches.sum_reduce::<R2<2, 6>, Axis<1>>();
                let mut p = ParamSet::of(&vit, cx);
                p.params.push(crate::nn::ParamInfo {
                    name: "mask_token".into(),
                    id: token.id,
                    shape: vec![1, 6],
                    init: crate::nn::Init::TruncNormal { std: 0.5 },
                });
                let mask = vec![1., 0., 0., 1., 1., 0., 0., 0., 0., 0., 0., 0., 0., 1., 0., 0., 0., 1.];
                layer_problem(cx, &p, vec![(x.id, rng.uniform(72, 1.0)), (m.id, mask)], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }
}
