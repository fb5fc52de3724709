//! A model variant written as two declarations and trained: a ViT of one's own with `vit!`,
//! a DINO objective for it with `dino!`, both checked at compile time, trained with the same
//! trainer as the zoo on the committed Fashion-MNIST subset (512 training, 256 test images),
//! with the teacher's weighted k-NN after each epoch beside the raw pixels.
//!
//! Run: `cargo run --release --example declare_variant` (about half a minute on 2 cores).
//!
//! Expected output (seed 0): the variant's parameter count (104896, head 49728), one k-NN line
//! per epoch from the random initialization (epoch 0: 57.0% top-1 at k=20) to epoch 8 (256
//! steps of batch 16: 52.0%), the raw pixels (79.7%), the speed, then `ok`. The example fails
//! when a loss is not finite, fewer than 200 steps ran, or the last k-NN top-1 is not above
//! 30% (chance is 10%). That the k-NN falls a little from the random initialization on 512
//! images is what the full dataset shows too in short runs (issue 16: DINO features that beat
//! raw pixels need a recipe found for this budget).
use std::path::PathBuf;

use dino::dataset::DataSpec;
use dino::train::{train_model, Device, Hyper, RunConfig, TrainOptions};

dino::vit! {
    /// A slim ViT for 28x28 grayscale images: a 4x4 grid of 7 px patches, width 64, depth 3,
    /// 4 heads, an MLP of width 128 and light stochastic depth.
    pub SlimVit { image: 28, patch: 7, channels: 1, dim: 64, depth: 3, heads: 4, mlp: 128, drop_path: 0.05 }
}

dino::dino! {
    /// DINO on SlimVit: 2 global and 4 local crops, a small head with 256 prototypes, a
    /// lower teacher momentum and a higher learning rate than the reference: the run is 256
    /// steps, not hundreds of thousands.
    pub SlimDino for SlimVit {
        head: { hidden: 128, bottleneck: 64, out: 256, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 4 x 14 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
        teacher_momentum: 0.99 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-3 per 256, warmup: 1 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 8, batch_size: 16,
        augment: {
            flip: 0.5, color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8, grayscale: off,
            blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3, solarize: threshold 0.5 p 0.2,
            normalize: mean [0.2860] std [0.3530],
        },
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = SlimDino::CONFIG;
    println!(
        "SlimVit: {} parameters, head {}; {} epochs of batch {}",
        SlimVit::CONFIG.num_params(),
        cfg.head.num_params(cfg.backbone.dim),
        cfg.epochs,
        cfg.batch_size
    );
    let subset = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fmnist-subset");
    let out = std::env::temp_dir().join(format!("dino-example-variant-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let opts = TrainOptions {
        run: RunConfig {
            preset: "slim-dino".into(),
            data: DataSpec::Fmnist(Some(subset)),
            val: None,
            seed: 0,
            limit: None,
            test_limit: None,
            knn: true,
            hyper: Hyper::default(),
            log_every: 16,
            save_every: 1000,
            precision: Default::default(),
        },
        out: out.clone(),
        resume: false,
        force: false,
        stop_after: None,
        group: Default::default(),
        quiet: true,
        device: Device::Cpu,
        compiled: None,
    };
    let r = train_model::<SlimDino>(&opts)?;
    for (i, l) in &r.losses {
        assert!(l.is_finite(), "loss {l} at iteration {i}");
    }
    let top1 =
        |v: &[dino::eval::knn::KnnResult], k: usize| v.iter().find(|x| x.k == k).map(|x| x.top1).unwrap_or(f64::NAN);
    for (epoch, knn) in &r.knn {
        println!("epoch {epoch}: teacher k-NN top-1 {:.1}% (k=20), {:.1}% (k=200)", top1(knn, 20), top1(knn, 200));
    }
    if let Some(raw) = &r.raw_knn {
        println!("raw pixels:   k-NN top-1 {:.1}% (k=20)", top1(raw, 20));
    }
    println!("{} steps at {:.0} images/s", r.iterations, r.images_per_s);
    let last = r.knn.last().map(|(_, k)| top1(k, 20)).unwrap_or(f64::NAN);
    assert!(r.iterations >= 200, "a few hundred steps: {}", r.iterations);
    assert!(last > 30.0, "the trained teacher's k-NN is {last:.1}%");
    std::fs::remove_dir_all(&out).ok();
    println!("ok");
    Ok(())
}
