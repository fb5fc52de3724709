//! Loading backbones from every distribution format (fixtures written by
//! `tests/reference/make_fixtures.py` from timm and transformers models with random weights):
//! timm-named safetensors, a float16 backbone `.pth`, a DINO full checkpoint `.pth` (teacher
//! and student, prefixes, optimizer state, argparse namespace) and a Hugging Face directory.
//! The [CLS] features of the loaded model equal the libraries' outputs (max abs error 1e-4);
//! malformed inputs give errors naming the file and the first wrong tensor.
mod common;

use std::path::PathBuf;

use common::{assert_close, fixture, tensor};
use dino::device::test_device;
use dino::eval::{Output, VitRunner};
use dino::weights;

dino::vit! {
    /// The fixtures' ViT: 32 px, patch 8, width 48, depth 2, 3 heads.
    pub SmallTestVit { image: 32, patch: 8, channels: 3, dim: 48, depth: 2, heads: 3 }
}

dino::vit! {
    /// The same with another width, to see the mismatch reported.
    pub WiderTestVit { image: 32, patch: 8, channels: 3, dim: 96, depth: 2, heads: 3 }
}

dino::vit! {
    /// The same with LayerScale.
    pub ScaledTestVit { image: 32, patch: 8, channels: 3, dim: 48, depth: 2, heads: 3, layer_scale: 1e-5 }
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/weights").join(name)
}

fn cls_of(file: &str, key: &str) -> (Vec<f32>, &'static str) {
    let p = path(file);
    // DINO's full checkpoints pickle their arguments (argparse.Namespace): allowed explicitly
    let b = weights::load_trusting(&p, key, &["argparse.Namespace".into()]).unwrap_or_else(|e| panic!("{e}"));
    b.check(&p, &SmallTestVit::CONFIG).unwrap();
    let mut r = VitRunner::<SmallTestVit>::new(Output::LastCls(1), b.eps.map(|e| e as f32), test_device()).unwrap();
    r.set_weights(&b.weights()).unwrap();
    let fx = fixture("weights/outputs");
    let img = &tensor(&fx, "image").data;
    let per = 3 * 32 * 32;
    let out = r.run(&[img[..per].to_vec(), img[per..].to_vec()], 32, 32).unwrap();
    (out.concat(), b.format)
}

#[test]
fn every_format_gives_the_reference_features() {
    let f = fixture("weights/outputs");
    for (file, key, reference) in [
        ("timm.safetensors", "teacher", "timm_cls"),
        ("backbone_fp16.pth", "teacher", "fp16_cls"),
        ("full_checkpoint.pth", "teacher", "timm_cls"),
        ("full_checkpoint.pth", "student", "timm_cls"),
        ("hf/model.safetensors", "teacher", "hf_cls"),
    ] {
        let (got, format) = cls_of(file, key);
        let want = &tensor(&f, reference).data;
        let err = common::max_abs_err(&got, want);
        println!("{file} ({format}, {key}): max abs error {err:.2e}");
        assert_close(&format!("{file} {key}"), &got, want, 1e-4, 0.0);
    }
}

#[test]
fn architecture_is_inferred_and_hf_config_read() {
    let p = path("hf/model.safetensors");
    let b = weights::load(&p, "teacher").unwrap();
    assert_eq!((b.eps, b.heads, b.format), (Some(1e-12), Some(3), "Hugging Face safetensors"));
    let i = b.infer(&p).unwrap();
    assert_eq!((i.dim, i.depth, i.patch, i.channels, i.image, i.mlp, i.qkv_bias), (48, 2, 8, 3, 32, 192, true));
    // the full checkpoint's heads are dropped, the backbone kept
    let c = weights::load_trusting(&path("full_checkpoint.pth"), "teacher", &["argparse.Namespace".into()]).unwrap();
    assert!(c.tensors.keys().all(|k| !k.starts_with("head")), "{:?}", c.tensors.keys().collect::<Vec<_>>());
    assert_eq!(c.tensors.len(), weights::load(&path("timm.safetensors"), "teacher").unwrap().tensors.len());
}

#[test]
fn mismatches_and_bad_files_are_named() {
    let p = path("timm.safetensors");
    let b = weights::load(&p, "teacher").unwrap();
    let e = b.check(&p, &WiderTestVit::CONFIG).unwrap_err().to_string();
    assert!(e.contains("timm.safetensors") && e.contains("width 48") && e.contains("96"), "{e}");
    let e = b.zoo_name(&p).unwrap_err().to_string();
    assert!(e.contains("--model"), "{e}");
    // a declaration with LayerScale (DINOv2's blocks) refuses weights without it; weights with
    // it fit it, and a declaration without it leaves the extra tensors to the strict loader
    // (which names them and suggests `--non-strict`)
    let e = b.check(&p, &ScaledTestVit::CONFIG).unwrap_err().to_string();
    assert!(e.contains("have no LayerScale") && e.contains("`ScaledTestVit` has"), "{e}");
    let mut scaled = b.clone();
    for i in 0..2 {
        for ls in ["ls1", "ls2"] {
            let t = dino::runtime::tensors::NamedTensor { shape: vec![48], data: vec![0.5; 48] };
            scaled.tensors.insert(format!("blocks.{i}.{ls}.gamma"), t);
        }
    }
    assert!(scaled.infer(&p).unwrap().layer_scale);
    scaled.check(&p, &ScaledTestVit::CONFIG).unwrap();
    scaled.check(&p, &SmallTestVit::CONFIG).unwrap();
    // a missing tensor is named by the runner
    let mut w = b.weights();
    w.remove("blocks.1.mlp.fc2.bias");
    let mut r = VitRunner::<SmallTestVit>::new(Output::LastCls(1), None, test_device()).unwrap();
    let e = r.set_weights(&w).unwrap_err().to_string();
    assert!(e.contains("blocks.1.mlp.fc2.bias"), "{e}");
    // files that are not weights
    let dir = common::Scratch::new("weights");
    for (name, bytes, why) in [
        ("junk.pth", b"PK\x03\x04 broken zip".to_vec(), "not a zip archive"),
        ("junk.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}".to_vec(), ""),
    ] {
        let f = dir.join(name);
        std::fs::write(&f, bytes).unwrap();
        let e = weights::load(&f, "teacher").and_then(|b| b.infer(&f).map(|_| ())).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(why), "{e}");
    }
}

#[test]
fn a_hugging_face_model_directory_loads_and_its_config_is_honoured_or_refused() {
    // the directory itself, as `from_pretrained` takes it
    let d = weights::load(&path("hf"), "teacher").unwrap();
    let f = weights::load(&path("hf/model.safetensors"), "teacher").unwrap();
    assert_eq!((d.tensors, d.heads, d.eps), (f.tensors, f.heads, f.eps));
    // a config.json that disagrees with the model or with the tensors
    let tmp = common::Scratch::new("hf");
    std::fs::copy(path("hf/model.safetensors"), tmp.join("model.safetensors")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("hf/config.json")).unwrap()).unwrap();
    let with = |key: &str, v: serde_json::Value| {
        let mut c = config.clone();
        c[key] = v;
        std::fs::write(tmp.join("config.json"), c.to_string()).unwrap();
        weights::load(&tmp, "teacher")
    };
    let b = with("num_attention_heads", 4.into()).unwrap();
    let e = b.check(&tmp.join("model.safetensors"), &SmallTestVit::CONFIG).unwrap_err().to_string();
    assert!(e.contains("4 heads") && e.contains("has 3"), "{e}");
    let e = with("num_attention_heads", 5.into()).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("5 attention heads"), "{e}");
    let e = with("hidden_size", 96.into()).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("hidden_size 96") && e.contains("48"), "{e}");
    std::fs::write(tmp.join("config.json"), "{ not json").unwrap();
    let e = weights::load(&tmp, "teacher").unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("not JSON"), "{e}");
    // a directory with no weights in it
    std::fs::remove_file(tmp.join("model.safetensors")).unwrap();
    let e = weights::load(&tmp, "teacher").unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && !e.contains("Is a directory"), "{e}");
}
