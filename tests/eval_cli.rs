//! The evaluation commands end to end on the committed Fashion-MNIST subset and on
//! generated photos: attention pictures at any size and the Jaccard measurement, the
//! supervised baseline and its weights reloaded, the linear probe, feature export.
mod common;
use common::Scratch;
use std::path::Path;
use std::process::Command;

const SUBSET: &str = "tests/fixtures/fmnist-subset";

fn dino(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dino")).args(args).args(["--threads", "2"]).output().unwrap();
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "dino {}\n{se}", args.join(" "));
    so.into_owned()
}

fn tmp(name: &str) -> Scratch {
    Scratch::new(&format!("eval-{name}"))
}

fn png_size(p: &Path) -> (u32, u32) {
    let i = image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (i.width(), i.height())
}

#[test]
fn attention_pictures_of_photos_of_any_size_and_fmnist() {
    let d = tmp("attn");
    // a color photo that is not square and not a multiple of the patch
    let photo = d.join("photo.png");
    image::RgbImage::from_fn(83, 45, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x + y) * 2) as u8]))
        .save(&photo)
        .unwrap();
    let out = d.join("out");
    let o = out.to_str().unwrap();
    dino(&[
        "attention",
        "--random-init",
        "--model",
        "vit-small-8",
        "--image",
        photo.to_str().unwrap(),
        "--size",
        "0",
        "--out",
        o,
    ]);
    // 83x45 cropped to 80x40: a 10x5 grid of 8 px patches, 6 heads
    for f in ["photo-mean.png", "photo-mask.png", "photo-head0.png", "photo-head5.png", "photo-grid.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let (w, h) = png_size(&out.join("photo-head0.png"));
    assert_eq!(w * 40, h * 80, "the head map keeps the cropped image's 80x40 shape ({w}x{h})");
    assert!(!out.join("photo-head6.png").exists());
    // Fashion-MNIST images and the Jaccard measurement
    let j = dino(&[
        "attention",
        "--random-init",
        "--model",
        "fmnist-small",
        "--fmnist",
        "1",
        "--fmnist-dir",
        SUBSET,
        "--jaccard",
        "64",
        "--out",
        o,
        "--json",
    ]);
    assert!(out.join("fmnist-test-0-grid.png").is_file());
    let v: serde_json::Value = serde_json::from_str(j.lines().last().unwrap()).unwrap();
    let jm = v["result"]["jaccard_mean_map"].as_f64().unwrap();
    let jb = v["result"]["jaccard_best_head"].as_f64().unwrap();
    assert_eq!(v["result"]["images"], 64);
    assert!((0.0..=1.0).contains(&jm) && jb >= jm - 1e-9, "{v}");
}

#[test]
fn supervised_baseline_trains_saves_and_reloads() {
    let d = tmp("sup");
    let w = d.join("backbone.safetensors");
    let data = format!("fmnist:{SUBSET}");
    let s = dino(&["supervised", "--data", &data, "--epochs", "1", "--batch-size", "32", "--out", w.to_str().unwrap()]);
    assert!(s.contains("test top-1"), "{s}");
    // the weights are official names: the loaders infer fmnist-small from the shapes
    let j = dino(&[
        "attention",
        "--weights",
        w.to_str().unwrap(),
        "--fmnist-dir",
        SUBSET,
        "--jaccard",
        "32",
        "--out",
        d.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(j.lines().last().unwrap()).unwrap();
    assert_eq!(v["result"]["model"], "fmnist-small");
}

#[test]
fn linear_probe_and_feature_export() {
    let data = format!("fmnist:{SUBSET}");
    let j = dino(&["linear", "--random-init", "--data", &data, "--epochs", "3", "--batch-size", "64", "--json"]);
    let v: serde_json::Value = serde_json::from_str(j.lines().last().unwrap()).unwrap();
    assert_eq!(v["result"]["feature_dim"], 4 * 128, "last 4 blocks' [CLS] of fmnist-small");
    assert_eq!(v["result"]["per_epoch_top1"].as_array().unwrap().len(), 3);
    assert!(v["result"]["best_top1"].as_f64().unwrap() > 20.0, "{v}");

    let d = tmp("feats");
    let npy = d.join("f.npy");
    dino(&["features", "--random-init", "--data", &data, "--split", "test", "--out", npy.to_str().unwrap()]);
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hl]).unwrap();
    assert!(header.contains("'shape': (256, 128)") && (10 + hl) % 64 == 0, "{header}");
    assert_eq!(bytes.len(), 10 + hl + 256 * 128 * 4);
    let list = std::fs::read_to_string(d.join("f.images.txt")).unwrap();
    assert_eq!(list.lines().count(), 256);
    let st = d.join("f.safetensors");
    dino(&[
        "features",
        "--random-init",
        "--data",
        &data,
        "--patch-tokens",
        "--limit",
        "10",
        "--out",
        st.to_str().unwrap(),
    ]);
    let f = dino::runtime::tensors::TensorFile::load(&st).unwrap();
    assert_eq!(f.tensors["features"].shape, [10, 50, 128]);
    assert_eq!(f.tensors["labels"].shape, [10]);
}
