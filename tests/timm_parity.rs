//! `vit!`-declared backbones with timm's weights equal timm's `VisionTransformer` with DINO's
//! settings (LayerNorm eps 1e-6, qkv bias, exact GELU): the [CLS] output and the last block's
//! attention, at the native 224 px and at a 96 px local crop whose position embeddings are
//! interpolated as DINO's `interpolate_pos_encoding` does (bicubic, scale (w0 + 0.1) / sqrt N,
//! no antialiasing; timm's own dynamic resizing antialiases and differs). Weights and images
//! are splitmix64 streams both sides generate (tests/common/splitmix.rs); the float64 PyTorch
//! outputs are in tests/fixtures/timm_vit_{s16,ti16}.safetensors. Tolerance: max abs error
//! <= 1e-4. Run through the CPU backend.
mod common;

use common::{assert_close, fixture, max_abs_err, splitmix, tensor};
use dino::runtime::backend::cpu::{CpuCompiler, CpuRuntime};
use dino::runtime::graph::{data, Handles};
use dino::runtime::model::VitModel;
use dino::runtime::nn::ParamSet;
use luminal::prelude::*;

dino::vit! {
    /// ViT-S/16 with 2 blocks.
    pub ShallowVitS16 { image: 224, patch: 16, channels: 3, dim: 384, depth: 2, heads: 6 }
}
dino::vit! {
    /// ViT-Ti/16 with 2 blocks.
    pub ShallowVitTi16 { image: 224, patch: 16, channels: 3, dim: 192, depth: 2, heads: 3 }
}

fn check<M: VitModel>(fixture_name: &str, forward: impl Fn(&M, &mut Graph) -> [(NodeIndex, &'static str); 4]) {
    let f = fixture(fixture_name);
    let seed: u64 = f.metadata["seed"].parse().unwrap();
    let mut cx = Box::new(Graph::new());
    let model = M::new(&mut cx);
    let outs = forward(&model, &mut cx);
    let params = ParamSet::of(&model, &mut cx);
    for (name, values) in splitmix::params(seed, &f.metadata["keys"]) {
        params.set(&mut cx, &name, values).unwrap_or_else(|e| panic!("timm key {name}: {e}"));
    }
    let mut handles = Handles(outs.iter().map(|o| o.0).collect());
    for id in &handles.0 {
        cx.no_delete.insert(*id);
    }
    cx.compile(<CpuCompiler>::default(), &mut handles);
    let mut rt = CpuRuntime::new(&cx);
    rt.execute(&mut cx).unwrap();
    for ((_, what), id) in outs.iter().zip(&handles.0) {
        let got = data::get(&cx, *id).unwrap();
        let want = &tensor(&f, what).data;
        println!("{fixture_name} {what}: max abs error {:.2e}", max_abs_err(got, want));
        assert_close(&format!("{fixture_name} {what}"), got, want, 1e-4, 0.0);
    }
}

/// Images of the fixture: splitmix stream `seed + size`, offset 0.
fn image<const B: usize, const S: usize>(cx: &mut Graph, seed: u64) -> GraphTensor<R4<B, 3, S, S>> {
    let x = cx.named_tensor::<R4<B, 3, S, S>>(&format!("image{S}"));
    data::set(cx, x.id, splitmix::uniform(seed + S as u64, 0, B * 3 * S * S));
    cx.no_delete.insert(x.id);
    x
}

/// The [CLS] rows of attention weights `(B, H, N, N)`: `(B, H, N)`.
fn cls_rows<const H: usize, const N: usize>(a: GraphTensor<R4<2, H, N, N>>) -> GraphTensor<R3<2, H, N>> {
    a.slice((.., .., ..luminal::prelude::symbolic::Expression::from(1), ..))
        .contiguous()
        .realize::<R4<2, H, 1, N>>()
        .reshape::<R3<2, H, N>>()
}

#[test]
fn vit_small_16_matches_timm() {
    check::<ShallowVitS16>("timm_vit_s16", |m, cx| {
        let (x224, x96) = (image::<2, 224>(cx, 16), image::<2, 96>(cx, 16));
        let cls224 = m.forward(x224);
        let attn224 = cls_rows(m.last_self_attention(x224));
        let cls96 = m.vit().forward::<Const<2>, 96, 96, 36, 37>(x96);
        let attn96 = m.vit().last_self_attention::<Const<2>, 96, 96, 36, 37>(x96);
        [(cls224.id, "cls_224"), (attn224.id, "attn_224"), (cls96.id, "cls_96"), (attn96.id, "attn_96")]
    });
}

#[test]
fn vit_tiny_16_matches_timm() {
    check::<ShallowVitTi16>("timm_vit_ti16", |m, cx| {
        let (x224, x96) = (image::<2, 224>(cx, 17), image::<2, 96>(cx, 17));
        let cls224 = m.forward(x224);
        let attn224 = cls_rows(m.last_self_attention(x224));
        let cls96 = m.vit().forward::<Const<2>, 96, 96, 36, 37>(x96);
        let attn96 = m.vit().last_self_attention::<Const<2>, 96, 96, 36, 37>(x96);
        [(cls224.id, "cls_224"), (attn224.id, "attn_224"), (cls96.id, "cls_96"), (attn96.id, "attn_96")]
    });
}
