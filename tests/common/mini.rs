//! A DINO small enough to train in a test: a 2-block, width-32 ViT on 28x28 Fashion-MNIST.

dino::vit! {
    /// A very small ViT for 28x28 grayscale images (4x4 grid of 7 px patches).
    pub MiniVit { image: 28, patch: 7, channels: 1, dim: 32, depth: 2, heads: 2, mlp: 64, drop_path: 0.1 }
}

dino::dino! {
    /// DINO on MiniVit, as the fmnist-small recipe.
    pub MiniDino for MiniVit {
        head: { hidden: 64, bottleneck: 32, out: 128, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 2 x 14 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
        teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 2, batch_size: 16,
        augment: {
            flip: 0.5, color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8, grayscale: off,
            blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3, solarize: threshold 0.5 p 0.2,
            normalize: mean [0.2860] std [0.3530],
        },
    }
}

dino::dino! {
    /// DINOv2's objective on MiniVit: KoLeo 0.1 and iBOT through the DINO head on half the
    /// global crops (10-50% of their 16 patches).
    pub MiniDinov2 for MiniVit {
        head: { hidden: 64, bottleneck: 32, out: 128, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 2 x 14 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
        teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 2, batch_size: 16, koleo: 0.1,
        ibot: { weight: 1.0, mask_ratio: 0.1..0.5, mask_probability: 0.5 },
        augment: {
            flip: 0.5, color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8, grayscale: off,
            blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3, solarize: threshold 0.5 p 0.2,
            normalize: mean [0.2860] std [0.3530],
        },
    }
}

/// The committed Fashion-MNIST subset (512 training and 256 test images).
pub fn subset() -> dino::dataset::DataSpec {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fmnist-subset");
    dino::dataset::DataSpec::Fmnist(Some(dir))
}

/// A quiet CPU run of `preset` on the subset into `out`: a step record per iteration, a
/// numbered checkpoint per epoch, default hyperparameters (set fields to change them).
pub fn subset_options(preset: &str, out: &std::path::Path, seed: u64) -> dino::train::TrainOptions {
    dino::train::TrainOptions {
        run: dino::train::RunConfig {
            preset: preset.into(),
            data: subset(),
            val: None,
            seed,
            limit: None,
            test_limit: None,
            knn: false,
            hyper: dino::train::Hyper::default(),
            log_every: 1,
            save_every: 1,
            precision: Default::default(),
        },
        out: out.to_path_buf(),
        resume: false,
        force: false,
        stop_after: None,
        group: Default::default(),
        quiet: true,
        device: dino::train::Device::Cpu,
        compiled: None,
    }
}
