//! The bad-input suite for files from strangers (see `tests/bad_input.rs` for the rules every
//! case asserts): pickles with code in them, storages that inflate past their tensors, views
//! past their storage, DINO's pickled arguments, broken archives, Hugging Face directories
//! without weights or with a broken config, tensors the model has no place for, weights of
//! another architecture.
mod common;

use common::cli_cases::*;
use dino_runtime::tensors::TensorFile;

/// `{"w": a 2x2 float tensor on storage 0 (4 elements)}` with `extra` before the closing `u`.
fn state_dict_pickle(extra: &[u8]) -> Vec<u8> {
    let s = |t: &str| [vec![b'X'], (t.len() as u32).to_le_bytes().to_vec(), t.as_bytes().to_vec()].concat();
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(s("w"));
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    p.extend(s("storage"));
    p.extend(b"ctorch\nFloatStorage\n");
    p.extend(s("0"));
    p.extend(s("cpu"));
    p.extend(b"K\x04tQK\x00(K\x02K\x02t(K\x02K\x01t\x89ccollections\nOrderedDict\n)RtR");
    p.extend(extra);
    p.extend(b"u.");
    p
}

#[test]
fn weights_from_strangers_are_refused_naming_the_file() {
    let d = scratch("weights");
    let data = subset();
    let w = root().join("tests/fixtures/weights");
    common::write_pth(
        &d.join("system.pth"),
        &state_dict_pickle(b"X\x04\x00\x00\x00evilcos\nsystem\n(X\x04\x00\x00\x00truetR"),
        &[0; 16],
    );
    common::write_pth(&d.join("bomb.pth"), &state_dict_pickle(b""), &vec![0u8; 1 << 20]);
    common::write_pth(&d.join("past.pth"), &state_dict_pickle(b"").replace_shape(), &[0; 16]);
    std::fs::write(d.join("junk.safetensors"), b"\x08\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    std::fs::write(d.join("broken.pth"), b"PK\x03\x04 not a zip").unwrap();
    std::fs::create_dir_all(d.join("hf-empty")).unwrap();
    std::fs::create_dir_all(d.join("hf-bad")).unwrap();
    std::fs::copy(w.join("hf/model.safetensors"), d.join("hf-bad/model.safetensors")).unwrap();
    std::fs::write(d.join("hf-bad/config.json"), "{ nope").unwrap();
    // fmnist-small's own shapes, with a tensor it has no place for
    let mut f = TensorFile::default();
    for (k, t) in dino::eval::features::random_backbone::<dino::models::FmnistSmallVit>(0) {
        f.insert(k, &t.shape, t.data);
    }
    f.insert("blocks.0.ls1.gamma", &[128], vec![1.0; 128]);
    f.save(d.join("extra.safetensors")).unwrap();
    let feats = |weights: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["features", "--weights", weights, "--data", &data, "--limit", "8", "--out", "f.npy"]
            .map(String::from)
            .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let full = w.join("full_checkpoint.pth");
    let timm = w.join("timm.safetensors");
    let c = |name, args: Vec<String>, exit, names: &[&str]| Case {
        name,
        args,
        exit,
        names: names.iter().map(|s| s.to_string()).collect(),
    };
    let cases = vec![
        c("os.system", feats("system.pth", &[]), REFUSED, &["system.pth", "`os.system`", "--safe-global"]),
        c("storage bomb", feats("bomb.pth", &[]), REFUSED, &["bomb.pth", "inflates to 1048576 bytes"]),
        c("past storage", feats("past.pth", &[]), REFUSED, &["past.pth", "reads", "holds 4"]),
        c("namespace", feats(full.to_str().unwrap(), &[]), REFUSED, &["full_checkpoint.pth", "argparse.Namespace"]),
        c("broken zip", feats("broken.pth", &[]), REFUSED, &["broken.pth", "zip"]),
        c("junk safetensors", feats("junk.safetensors", &[]), REFUSED, &["junk.safetensors"]),
        c("missing file", feats("none.safetensors", &[]), REFUSED, &["none.safetensors"]),
        c("empty HF dir", feats("hf-empty", &[]), REFUSED, &["hf-empty", "model.safetensors"]),
        c("bad HF config", feats("hf-bad", &[]), REFUSED, &["hf-bad/config.json", "not JSON"]),
        c(
            "unexpected tensors",
            feats("extra.safetensors", &[]),
            REFUSED,
            &["extra.safetensors", "blocks.0.ls1.gamma", "--non-strict"],
        ),
        c("unknown architecture", feats(timm.to_str().unwrap(), &[]), REFUSED, &["timm.safetensors", "--model"]),
        c(
            "wrong model",
            feats(timm.to_str().unwrap(), &["--model", "fmnist-small"]),
            REFUSED,
            &["timm.safetensors", "width 48"],
        ),
        c("unknown model", feats(timm.to_str().unwrap(), &["--model", "vit-giant"]), REFUSED, &["vit-giant"]),
    ];
    println!("{} weight cases", run_cases(&d, cases));
    // told to: the extra tensor is listed and dropped, and the export is written
    let out = dino(&d, &feats("extra.safetensors", &["--non-strict"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blocks.0.ls1.gamma"));
    assert!(d.join("f.npy").exists() && d.join("f.images.txt").exists());
}

trait ReplaceShape {
    fn replace_shape(self) -> Vec<u8>;
}

impl ReplaceShape for Vec<u8> {
    /// (2, 2) -> (100, 100) with strides (100, 1): a view far past its 4-element storage.
    fn replace_shape(self) -> Vec<u8> {
        let from = b"(K\x02K\x02t(K\x02K\x01t";
        let to = b"(KdKdt(KdK\x01t";
        let at = self.windows(from.len()).position(|w| w == from).unwrap();
        [&self[..at], &to[..], &self[at + from.len()..]].concat()
    }
}
