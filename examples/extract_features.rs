//! Embed the runtime in a program: declare a ViT with `vit!`, load released-format weights
//! (timm-named safetensors; `.pth` and Hugging Face directories load the same way), and
//! extract [CLS] features, here of images the program makes itself and of the committed
//! Fashion-MNIST subset. The weights are the test fixture written by
//! `tests/reference/make_fixtures.py` from a timm model; its reference features are in the
//! same folder, so the example checks itself against timm and fails beyond 1e-4.
//!
//! `cargo run --release --example extract_features`
//!
//! Expected output (the error varies a little with the machine's float rounding):
//! ```text
//! loaded 30 tensors (timm safetensors): width 48, depth 2, patch 8, 32 px
//! timm's [CLS] features of the fixture images: max abs error 3.2e-6
//! 64 Fashion-MNIST images -> 64 x 48 features; mean cosine similarity to image 0: 0.454
//! ```
use std::path::PathBuf;

use dino::device::Device;
use dino::eval::preprocess::normalize;
use dino::eval::{Output, VitRunner};
use dino::runtime::data::{fashion_mnist, pil, Dataset};
use dino::runtime::tensors::TensorFile;

dino::vit! {
    /// The fixture's ViT: 32 px, patch 8, width 48, depth 2, 3 heads.
    pub TinyVit { image: 32, patch: 8, channels: 3, dim: 48, depth: 2, heads: 3 }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // the weights: any format `dino::weights` reads, checked against the declaration
    let path = root.join("weights/timm.safetensors");
    let backbone = dino::weights::load(&path, "teacher")?;
    backbone.check(&path, &TinyVit::CONFIG)?;
    let i = backbone.infer(&path)?;
    println!(
        "loaded {} tensors ({}): width {}, depth {}, patch {}, {} px",
        backbone.tensors.len(),
        backbone.format,
        i.dim,
        i.depth,
        i.patch,
        i.image
    );
    let mut runner = VitRunner::<TinyVit>::new(Output::LastCls(1), None, Device::Cpu)?;
    runner.set_weights(&backbone.weights())?;

    // images already preprocessed (the fixture's): against timm's own outputs
    let reference = TensorFile::load(root.join("weights/outputs.safetensors"))?;
    let images = &reference.get("image")?.data;
    let per = 3 * 32 * 32;
    let batch: Vec<Vec<f32>> = images.chunks(per).map(<[f32]>::to_vec).collect();
    let got: Vec<f32> = runner.run(&batch, 32, 32)?.concat();
    let want = &reference.get("timm_cls")?.data;
    let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("timm's [CLS] features of the fixture images: max abs error {err:.1e}");
    if !(err <= 1e-4) {
        return Err(format!("features differ from timm's by {err}").into());
    }

    // a dataset: resized to the model's size, normalized as ImageNet models expect
    let fm = fashion_mnist(Some(&root.join("fmnist-subset")))?;
    let (mean, std) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    let xs: Vec<Vec<f32>> = (0..64)
        .map(|k| {
            let img = fm.train.load(k)?.with_channels(3);
            Ok(normalize(&pil::resize_bicubic(&img, 32, 32), &mean, &std))
        })
        .collect::<dino::runtime::Result<_>>()?;
    let feats = runner.run(&xs, 32, 32)?;
    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let first = unit(&feats[0]);
    let cos: f32 =
        feats[1..].iter().map(|f| unit(f).iter().zip(&first).map(|(a, b)| a * b).sum::<f32>()).sum::<f32>() / 63.0;
    println!(
        "{} Fashion-MNIST images -> {} x {} features; mean cosine similarity to image 0: {cos:.3}",
        xs.len(),
        feats.len(),
        feats[0].len()
    );
    Ok(())
}
