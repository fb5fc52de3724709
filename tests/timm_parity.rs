//! `vit!`-declared backbones with timm's weights equal timm's `VisionTransformer` with DINO's
//! settings (LayerNorm eps 1e-6, qkv bias, exact GELU): the [CLS] output and the last block's
//! attention, at the native 224 px and at a 96 px local crop whose position embeddings are
//! interpolated as DINO's `interpolate_pos_encoding` does (bicubic, scale (w0 + 0.1) / sqrt N,
//! no antialiasing; timm's own dynamic resizing antialiases and differs). Weights and images
//! are splitmix64 streams both sides generate (tests/common/splitmix.rs); the float64 PyTorch
//! outputs are in tests/fixtures/timm_vit_{s16,ti16}.safetensors. Tolerance: max abs error
//! <= 1e-4. Run through the CPU backend.
mod common;
#[path = "common/timm_check.rs"]
mod timm_check;

use common::{assert_close, fixture, max_abs_err, splitmix, tensor};
use dino::device::test_executor;
use dino::runtime::backend::Passes;
use dino::runtime::graph::{data, Handles};
use dino::runtime::model::VitModel;
use dino::runtime::nn::ParamSet;
use luminal::prelude::*;
use timm_check::{check, cls_rows, image, timm_params};

dino::vit! {
    /// ViT-S/16 with 2 blocks.
    pub ShallowVitS16 { image: 224, patch: 16, channels: 3, dim: 384, depth: 2, heads: 6 }
}
dino::vit! {
    /// ViT-Ti/16 with 2 blocks.
    pub ShallowVitTi16 { image: 224, patch: 16, channels: 3, dim: 192, depth: 2, heads: 3 }
}
dino::vit! {
    /// DINOv2's ViT-S/14 (518 px, LayerScale) with 2 blocks.
    pub ShallowVitS14 { image: 518, patch: 14, channels: 3, dim: 384, depth: 2, heads: 6, layer_scale: 1e-5 }
}
dino::vit! {
    /// ViT-Ti/16 with 2 blocks and LayerScale (timm's `init_values`).
    pub ShallowVitTi16Ls { image: 224, patch: 16, channels: 3, dim: 192, depth: 2, heads: 3, layer_scale: 1e-5 }
}

/// The forward of a 224 px backbone the fixtures hold: [CLS] and the [CLS] attention rows at
/// 224 px and at a 96 px crop (6x6 grid, position embeddings interpolated), images of `seed`.
macro_rules! at_224_and_96 {
    ($seed:expr) => {
        |m, cx| {
            let (x224, x96) = (image::<2, 224>(cx, $seed), image::<2, 96>(cx, $seed));
            let cls224 = m.forward(x224);
            let attn224 = cls_rows(m.last_self_attention(x224));
            let cls96 = m.vit().forward::<Const<2>, 96, 96, 36, 37>(x96);
            let attn96 = m.vit().last_self_attention::<Const<2>, 96, 96, 36, 37>(x96);
            [(cls224.id, "cls_224"), (attn224.id, "attn_224"), (cls96.id, "cls_96"), (attn96.id, "attn_96")]
        }
    };
}

#[test]
fn vit_small_16_matches_timm() {
    check::<ShallowVitS16>("timm_vit_s16", at_224_and_96!(16));
}

#[test]
fn vit_tiny_16_matches_timm() {
    check::<ShallowVitTi16>("timm_vit_ti16", at_224_and_96!(17));
}

/// LayerScale (`ls1.gamma`, `ls2.gamma` of every block, timm's names and order): the fixture's
/// `gamma`s are splitmix values in [0.1, 0.9], so a scale left out or applied to the wrong
/// branch moves the outputs far beyond the tolerance.
#[test]
fn vit_tiny_16_with_layer_scale_matches_timm() {
    check::<ShallowVitTi16Ls>("timm_vit_ti16_ls", at_224_and_96!(18));
    // the declared parameter count is timm's
    assert_eq!(ShallowVitTi16Ls::CONFIG.num_params(), timm_params("timm_vit_ti16_ls"));
    assert_eq!(ShallowVitTi16Ls::CONFIG.num_params(), ShallowVitTi16::CONFIG.num_params() + 2 * 2 * 192);
}

/// DINOv2's ViT-S/14 layout (patch 14, 37x37 grid at 518 px, LayerScale) at its native size
/// and at a 224 px crop (16x16 grid, position embeddings interpolated with DINOv2's offset 0.1
/// and no antialiasing, as its models without registers do).
#[test]
fn vit_small_14_with_layer_scale_matches_timm() {
    check::<ShallowVitS14>("timm_vit_s14_ls", |m, cx| {
        let (x518, x224) = (image::<2, 518>(cx, 19), image::<2, 224>(cx, 19));
        let cls518 = m.forward(x518);
        let attn518 = cls_rows(m.last_self_attention(x518));
        let cls224 = m.vit().forward::<Const<2>, 224, 224, 256, 257>(x224);
        let attn224 = cls_rows(m.vit().last_self_attention::<Const<2>, 224, 224, 256, 257>(x224));
        [(cls518.id, "cls_518"), (attn518.id, "attn_518"), (cls224.id, "cls_224"), (attn224.id, "attn_224")]
    });
    assert_eq!(ShallowVitS14::CONFIG.num_params(), timm_params("timm_vit_s14_ls"));
}

/// The dynamic-size path (patches and position-embedding matrix fed as inputs, any size in
/// one compiled graph) against the same fixtures: one graph, run at 224 px and then at 96 px.
fn check_dynamic<M: VitModel>(fixture_name: &str, seed: u64) {
    use dino::runtime::nn::vit::{patchify, resample_matrix, VitLayers};
    let f = fixture(fixture_name);
    let mut cx = Box::new(Graph::new());
    let model = M::new(&mut cx);
    let (p, c) = (M::PATCH, M::CHANNELS);
    let patches = cx.named_tensor::<(Dyn<'b'>, Dyn<'n'>, <M::Vit as VitLayers>::PatchPixels)>("patches");
    let resample = cx.named_tensor::<(Dyn<'n'>, <M::Vit as VitLayers>::Native)>("resample");
    let cls = model.vit().last_cls_dyn(patches, resample, 1)[0];
    let attn = model.vit().last_attention_dyn(patches, resample);
    let params = ParamSet::of(&model, &mut cx);
    for (name, values) in splitmix::params(seed, &f.metadata["keys"]) {
        params.set(&mut cx, &name, values).unwrap();
    }
    for id in [cls.id, attn.id] {
        cx.no_delete.insert(id);
    }
    for (k, v) in [('b', 2), ('n', 196), ('t', 197)] {
        cx.set_dyn_dim(k, v);
    }
    let mut handles = Handles(vec![cls.id, attn.id]);
    cx.compile(Passes::default(), &mut handles);
    let mut rt = test_executor(&cx);
    let g0 = M::IMAGE / p;
    for size in [224usize, 96] {
        let g = size / p;
        let img = splitmix::uniform(seed + size as u64, 0, 2 * c * size * size);
        let per = c * size * size;
        let mut pv = patchify(&img[..per], c, size, size, p);
        pv.extend(patchify(&img[per..], c, size, size, p));
        for (k, v) in [('b', 2), ('n', g * g), ('t', g * g + 1)] {
            cx.set_dyn_dim(k, v);
        }
        data::set(&mut cx, patches.id, pv);
        data::set(&mut cx, resample.id, resample_matrix(g0, g, g, Default::default()));
        rt.execute_to_host(&mut cx).unwrap();
        let got_cls = data::take(&mut cx, handles.0[0]).unwrap();
        let got_attn = data::take(&mut cx, handles.0[1]).unwrap();
        assert_close(
            &format!("{fixture_name} dynamic cls_{size}"),
            &got_cls,
            &tensor(&f, &format!("cls_{size}")).data,
            1e-4,
            0.0,
        );
        let n = g * g + 1;
        let heads = got_attn.len() / (2 * n * n);
        // the fixture holds [CLS] rows at 224 px and the full matrices at 96 px
        let attn: Vec<f32> = if size == 224 {
            (0..2 * heads).flat_map(|bh| got_attn[bh * n * n..bh * n * n + n].to_vec()).collect()
        } else {
            got_attn
        };
        assert_close(
            &format!("{fixture_name} dynamic attn_{size}"),
            &attn,
            &tensor(&f, &format!("attn_{size}")).data,
            1e-4,
            0.0,
        );
    }
}

#[test]
fn dynamic_size_path_matches_timm_at_both_sizes() {
    check_dynamic::<ShallowVitS16>("timm_vit_s16", 16);
    check_dynamic::<ShallowVitTi16>("timm_vit_ti16", 17);
    check_dynamic::<ShallowVitTi16Ls>("timm_vit_ti16_ls", 18);
}

dino::vit! {
    /// DINOv2's layout with 4 registers and LayerScale, small: 56 px, patch 14, width 48.
    pub TinyVitReg4 { image: 56, patch: 14, channels: 3, dim: 48, depth: 2, heads: 3, layer_scale: 1e-5, registers: 4 }
}

/// Register tokens, with timm's weights of DINOv2 with registers (`reg_token`, and no [CLS]
/// position: `no_embed_class`) through the weight loader, which gives them the official form
/// (`register_tokens`, a zero [CLS] row in `pos_embed`): the graph's [CLS] and its [CLS]
/// attention over every token ([CLS], 4 registers, patches) at the native 56 px and an 84 px
/// crop; then the evaluation runner's tokens (the registers left out) and attention maps (their
/// columns left out) at 84 px.
#[test]
fn registers_match_timm_through_the_weight_loader() {
    use dino::eval::attention::AttentionMaps;
    use dino::eval::{Output, VitRunner};
    let f = fixture("timm_vit_reg4");
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/weights/timm_reg4.safetensors");
    let b = dino::weights::load(&path, "teacher").unwrap();
    assert_eq!(b.tensors["register_tokens"].shape, [1, 4, 48]);
    assert_eq!(b.tensors["pos_embed"].shape, [1, 17, 48]);
    assert!(b.tensors["pos_embed"].data[..48].iter().all(|v| *v == 0.0));
    assert_eq!(b.infer(&path).unwrap().registers, 4);
    b.check(&path, &TinyVitReg4::CONFIG).unwrap();
    let e = b.check(&path, &ShallowVitTi16::CONFIG).unwrap_err().to_string();
    assert!(e.contains("timm_reg4.safetensors"), "{e}");
    let mut without = b.clone();
    without.tensors.remove("register_tokens");
    let e = without.check(&path, &TinyVitReg4::CONFIG).unwrap_err().to_string();
    assert!(e.contains("0 register tokens") && e.contains("`TinyVitReg4` has 4"), "{e}");
    let timm = timm_params("timm_vit_reg4");
    // the official form has one more position row ([CLS]'s, zero) than timm's
    assert_eq!(TinyVitReg4::CONFIG.num_params(), timm + 48);

    let mut cx = Box::new(Graph::new());
    let m = TinyVitReg4::new(&mut cx);
    let (x56, x84) = (image::<2, 56>(&mut cx, 20), image::<2, 84>(&mut cx, 20));
    let outs = [
        (m.forward(x56).id, "cls_56"),
        (cls_rows(m.last_self_attention(x56)).id, "attn_56"),
        (m.vit().forward::<Const<2>, 84, 84, 36, 41>(x84).id, "cls_84"),
        (cls_rows(m.vit().last_self_attention::<Const<2>, 84, 84, 36, 41>(x84)).id, "attn_84"),
    ];
    let params = ParamSet::of(&m, &mut cx);
    for (name, t) in &b.tensors {
        params.set(&mut cx, name, t.data.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let mut handles = Handles(outs.iter().map(|o| o.0).collect());
    for id in &handles.0 {
        cx.no_delete.insert(*id);
    }
    cx.compile(Passes::default(), &mut handles);
    let mut rt = test_executor(&cx);
    rt.execute_to_host(&mut cx).unwrap();
    for ((_, what), id) in outs.iter().zip(&handles.0) {
        let got = data::get(&cx, *id).unwrap();
        println!("timm_vit_reg4 {what}: max abs error {:.2e}", max_abs_err(got, &tensor(&f, what).data));
        assert_close(&format!("timm_vit_reg4 {what}"), got, &tensor(&f, what).data, 1e-4, 0.0);
    }

    let img = splitmix::uniform(20 + 84, 0, 2 * 3 * 84 * 84);
    let imgs = vec![img[..3 * 84 * 84].to_vec(), img[3 * 84 * 84..].to_vec()];
    let mut attn = VitRunner::<TinyVitReg4>::new(Output::Attention, None, dino::device::test_device()).unwrap();
    attn.set_weights(&b.weights()).unwrap();
    let got = attn.run(&imgs, 84, 84).unwrap();
    let rows = &tensor(&f, "attn_84").data; // (2, 3, 41)
    for (i, g) in got.iter().enumerate() {
        let maps = AttentionMaps::from_weights(g, 6, 6, 14, 4);
        for (h, map) in maps.heads.iter().enumerate() {
            assert_close(&format!("attention map {i}/{h}"), map, &rows[(i * 3 + h) * 41 + 5..][..36], 1e-4, 0.0);
        }
    }
    let mut tokens = VitRunner::<TinyVitReg4>::new(Output::Tokens, None, dino::device::test_device()).unwrap();
    tokens.set_weights(&b.weights()).unwrap();
    let got = tokens.run(&imgs, 84, 84).unwrap();
    let all = &tensor(&f, "tokens_84").data; // (2, 41, 48)
    for (i, g) in got.iter().enumerate() {
        let want: Vec<f32> =
            (0..41).filter(|t| !(1..5).contains(t)).flat_map(|t| all[(i * 41 + t) * 48..][..48].to_vec()).collect();
        assert_close(&format!("runner tokens of image {i}"), g, &want, 1e-4, 0.0);
    }
}

dino::vit! {
    /// DINOv2's ViT-g/14 form, small: SwiGLU (hidden 128 from `mlp_ratio: 4`), LayerScale and
    /// 4 registers at 56 px, patch 14, width 48.
    pub TinyVitSwiGlu { image: 56, patch: 14, channels: 3, dim: 48, depth: 2, heads: 3, mlp: swiglu, layer_scale: 1e-5, registers: 4 }
}

dino::vit! {
    /// `TinyVitSwiGlu` with a GELU MLP of its hidden width.
    pub TinyVitGelu128 { image: 56, patch: 14, channels: 3, dim: 48, depth: 2, heads: 3, mlp: 128, layer_scale: 1e-5, registers: 4 }
}

/// SwiGLU, with timm's weights (`SwiGLUPacked`: `fc1`/`fc2`) through the weight loader, which
/// names them as DINOv2 does (`w12`/`w3`, told apart from a GELU MLP by their shapes): [CLS]
/// and its attention row at the native 56 px and an 84 px crop. The same tensors under
/// DINOv2's official names and Hugging Face's (`mlp.weights_in/out`) load to the same
/// backbone; a GELU declaration refuses them by name.
#[test]
fn swiglu_matches_timm_through_the_weight_loader() {
    use dino::runtime::config::Ffn;
    let f = fixture("timm_vit_swiglu");
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/weights/timm_swiglu.safetensors");
    let b = dino::weights::load(&path, "teacher").unwrap();
    assert_eq!(b.tensors["blocks.1.mlp.w12.weight"].shape, [256, 48]);
    assert_eq!(b.tensors["blocks.1.mlp.w3.weight"].shape, [48, 128]);
    assert!(!b.tensors.keys().any(|k| k.contains("mlp.fc")));
    let i = b.infer(&path).unwrap();
    assert_eq!((i.ffn, i.mlp), (Ffn::SwiGlu, 128));
    assert_eq!((TinyVitSwiGlu::CONFIG.ffn, TinyVitSwiGlu::CONFIG.mlp), (Ffn::SwiGlu, 128));
    b.check(&path, &TinyVitSwiGlu::CONFIG).unwrap();
    let e = b.check(&path, &TinyVitReg4::CONFIG).unwrap_err().to_string();
    assert!(e.contains("timm_swiglu.safetensors") && e.contains("MLP width 128"), "{e}");
    let e = b.check(&path, &TinyVitGelu128::CONFIG).unwrap_err().to_string();
    assert!(e.contains("a swiglu MLP, `TinyVitGelu128` has gelu"), "{e}");
    // the parameter count: timm's, plus the official form's [CLS] position row
    assert_eq!(TinyVitSwiGlu::CONFIG.num_params(), timm_params("timm_vit_swiglu") + 48);
    assert_eq!(f.metadata["params"].parse::<usize>().unwrap() + 48, TinyVitSwiGlu::CONFIG.num_params());

    // the official and Hugging Face names of the same tensors
    let dir = common::Scratch::new("swiglu");
    let mut official = dino::runtime::tensors::TensorFile::default();
    for (k, t) in &b.tensors {
        official.insert(k.clone(), &t.shape, t.data.clone());
    }
    let p = dir.join("official.safetensors");
    official.save(&p).unwrap();
    let o = dino::weights::load(&p, "teacher").unwrap();
    assert_eq!(o.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
    let mut hf = dino::runtime::tensors::TensorFile::default();
    for (k, t) in &b.tensors {
        let name = match k.strip_prefix("blocks.") {
            Some(rest) => {
                let (i, tail) = rest.split_once('.').unwrap();
                let tail = tail
                    .replace("mlp.w12.", "mlp.weights_in.")
                    .replace("mlp.w3.", "mlp.weights_out.")
                    .replace("ls1.gamma", "layer_scale1.lambda1")
                    .replace("ls2.gamma", "layer_scale2.lambda1")
                    .replace("attn.proj.", "attention.output.dense.");
                if tail.starts_with("attn.qkv.") {
                    // Hugging Face keeps query, key and value apart
                    let kind = tail.rsplit('.').next().unwrap();
                    let n = t.shape[0] / 3;
                    let per = t.data.len() / 3;
                    for (j, part) in ["query", "key", "value"].iter().enumerate() {
                        let mut shape = t.shape.clone();
                        shape[0] = n;
                        hf.insert(
                            format!("encoder.layer.{i}.attention.attention.{part}.{kind}"),
                            &shape,
                            t.data[j * per..][..per].to_vec(),
                        );
                    }
                    continue;
                }
                format!("encoder.layer.{i}.{tail}")
            }
            None => match k.as_str() {
                "cls_token" => "embeddings.cls_token".into(),
                "pos_embed" => "embeddings.position_embeddings".into(),
                "register_tokens" => "embeddings.register_tokens".into(),
                "norm.weight" => "layernorm.weight".into(),
                "norm.bias" => "layernorm.bias".into(),
                other => other.replace("patch_embed.proj.", "embeddings.patch_embeddings.projection."),
            },
        };
        hf.insert(name, &t.shape, t.data.clone());
    }
    hf.insert("embeddings.mask_token", &[1, 48], vec![0.0; 48]);
    let p = dir.join("model.safetensors");
    hf.save(&p).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "dinov2_with_registers", "hidden_size": 48, "num_attention_heads": 3, "num_hidden_layers": 2, "patch_size": 14, "image_size": 56, "num_register_tokens": 4, "use_swiglu_ffn": true, "layer_norm_eps": 1e-6}"#).unwrap();
    let h = dino::weights::load(&dir, "teacher").unwrap();
    assert_eq!(h.format, "Hugging Face safetensors");
    assert_eq!(h.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
    for (k, t) in &h.tensors {
        assert_eq!((&t.shape, &t.data), (&b.tensors[k].shape, &b.tensors[k].data), "{k}");
    }
    std::fs::write(dir.join("config.json"), r#"{"use_swiglu_ffn": false}"#).unwrap();
    let e = dino::weights::load(&dir, "teacher").unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("use_swiglu_ffn false") && e.contains("swiglu MLP"), "{e}");

    let mut cx = Box::new(Graph::new());
    let m = TinyVitSwiGlu::new(&mut cx);
    let (x56, x84) = (image::<2, 56>(&mut cx, 21), image::<2, 84>(&mut cx, 21));
    let outs = [
        (m.forward(x56).id, "cls_56"),
        (cls_rows(m.last_self_attention(x56)).id, "attn_56"),
        (m.vit().forward::<Const<2>, 84, 84, 36, 41>(x84).id, "cls_84"),
        (cls_rows(m.vit().last_self_attention::<Const<2>, 84, 84, 36, 41>(x84)).id, "attn_84"),
    ];
    let params = ParamSet::of(&m, &mut cx);
    for (name, t) in &b.tensors {
        params.set(&mut cx, name, t.data.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let mut handles = Handles(outs.iter().map(|o| o.0).collect());
    for id in &handles.0 {
        cx.no_delete.insert(*id);
    }
    cx.compile(Passes::default(), &mut handles);
    let mut rt = test_executor(&cx);
    rt.execute_to_host(&mut cx).unwrap();
    for ((_, what), id) in outs.iter().zip(&handles.0) {
        let got = data::get(&cx, *id).unwrap();
        println!("timm_vit_swiglu {what}: max abs error {:.2e}", max_abs_err(got, &tensor(&f, what).data));
        assert_close(&format!("timm_vit_swiglu {what}"), got, &tensor(&f, what).data, 1e-4, 0.0);
    }
}

dino::vit! {
    /// DINOv2's ViT-g/14: SwiGLU of 4096 hidden channels, LayerScale, 518 px.
    pub DeclaredVitG14 { image: 518, patch: 14, channels: 3, dim: 1536, depth: 40, heads: 24, mlp: swiglu, layer_scale: 1e-5 }
}
dino::vit! {
    /// DINOv2's ViT-S/14.
    pub DeclaredVitS14 { image: 518, patch: 14, channels: 3, dim: 384, depth: 12, heads: 6, layer_scale: 1e-5 }
}
dino::vit! {
    /// DINOv2's ViT-S/14 with 4 registers.
    pub DeclaredVitS14Reg4 { image: 518, patch: 14, channels: 3, dim: 384, depth: 12, heads: 6, layer_scale: 1e-5, registers: 4 }
}

/// Declarations count what timm's DINOv2 models hold (`timm.create_model(name).parameters()`,
/// timm 1.0.31): `vit_giant_patch14_dinov2` 1,136,479,232 (the official `dinov2_vitg14` adds
/// its 1536-wide `mask_token`, which a backbone does not use), `vit_small_patch14_dinov2`
/// 22,056,192, `vit_small_patch14_reg4_dinov2` 22,057,344 less the [CLS] position row timm
/// does not keep (384).
#[test]
fn dinov2_declarations_count_timms_parameters() {
    assert_eq!(DeclaredVitG14::CONFIG.mlp, 4096);
    assert_eq!(DeclaredVitG14::CONFIG.num_params(), 1_136_479_232);
    assert_eq!(DeclaredVitS14::CONFIG.num_params(), 22_056_192);
    assert_eq!(DeclaredVitS14Reg4::CONFIG.num_params(), 22_057_344 + 384);
}

dino::vit! {
    /// `TinyVitReg4` with the interpolation of DINOv2's register models.
    pub TinyVitReg4Aa { image: 56, patch: 14, channels: 3, dim: 48, depth: 2, heads: 3, layer_scale: 1e-5, registers: 4, interpolation: antialiased }
}

/// DINOv2's register models resize position embeddings with antialiased bicubic to the exact
/// grid (no 0.1 offset): with the timm register weights, [CLS] and its attention row at an
/// 84 px crop (4x4 grid grown to 6x6) and a 28 px one (shrunk to 2x2) equal timm's model fed
/// `F.interpolate(..., size, mode='bicubic', antialias=True)`; DINO's interpolation does not.
#[test]
fn antialiased_interpolation_matches_dinov2s_register_models() {
    use dino::runtime::config::Interpolation;
    assert_eq!(TinyVitReg4Aa::CONFIG.interpolation, Interpolation::Antialiased);
    assert_eq!(TinyVitReg4::CONFIG.interpolation, Interpolation::Bicubic);
    let f = fixture("timm_vit_reg4");
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/weights/timm_reg4.safetensors");
    let b = dino::weights::load(&path, "teacher").unwrap();
    let run = |aa: bool| {
        let mut cx = Box::new(Graph::new());
        let (x84, x28) = (image::<2, 84>(&mut cx, 20), image::<2, 28>(&mut cx, 20));
        let (outs, params) = if aa {
            let m = TinyVitReg4Aa::new(&mut cx);
            let outs = [
                m.vit().forward::<Const<2>, 84, 84, 36, 41>(x84).id,
                cls_rows(m.vit().last_self_attention::<Const<2>, 84, 84, 36, 41>(x84)).id,
                m.vit().forward::<Const<2>, 28, 28, 4, 9>(x28).id,
                cls_rows(m.vit().last_self_attention::<Const<2>, 28, 28, 4, 9>(x28)).id,
            ];
            (outs, ParamSet::of(&m, &mut cx))
        } else {
            let m = TinyVitReg4::new(&mut cx);
            let outs = [
                m.vit().forward::<Const<2>, 84, 84, 36, 41>(x84).id,
                cls_rows(m.vit().last_self_attention::<Const<2>, 84, 84, 36, 41>(x84)).id,
                m.vit().forward::<Const<2>, 28, 28, 4, 9>(x28).id,
                cls_rows(m.vit().last_self_attention::<Const<2>, 28, 28, 4, 9>(x28)).id,
            ];
            (outs, ParamSet::of(&m, &mut cx))
        };
        for (name, t) in &b.tensors {
            params.set(&mut cx, name, t.data.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let mut handles = Handles(outs.to_vec());
        for id in &handles.0 {
            cx.no_delete.insert(*id);
        }
        cx.compile(Passes::default(), &mut handles);
        let mut rt = test_executor(&cx);
        rt.execute_to_host(&mut cx).unwrap();
        handles.0.iter().map(|id| data::get(&cx, *id).unwrap().to_vec()).collect::<Vec<_>>()
    };
    let names = ["cls_84_aa", "attn_84_aa", "cls_28_aa", "attn_28_aa"];
    for (got, what) in run(true).iter().zip(names) {
        println!("timm_vit_reg4 {what}: max abs error {:.2e}", max_abs_err(got, &tensor(&f, what).data));
        assert_close(&format!("timm_vit_reg4 {what}"), got, &tensor(&f, what).data, 1e-4, 0.0);
    }
    // the two interpolations differ where it shows: the shrunk crop's [CLS]
    let dino = run(false);
    let d = max_abs_err(&dino[2], &tensor(&f, "cls_28_aa").data);
    println!("DINO's interpolation against DINOv2's at 28 px: {d:.2e}");
    assert!(d > 1e-3, "{d}");
}
