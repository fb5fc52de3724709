//! Presets sized for a CPU: Fashion-MNIST (28x28 grayscale).
use dino_macros::{dino, vit};

vit! {
    /// A small ViT for 28x28 grayscale images: 7x7 patches of 4 px, width 128, depth 6.
    pub FmnistSmallVit { image: 28, patch: 4, channels: 1, dim: 128, depth: 6, heads: 4, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1 }
}

vit! {
    /// ViT-Ti (width 192, depth 12) on 28x28 grayscale images with 4 px patches.
    pub FmnistTinyVit { image: 28, patch: 4, channels: 1, dim: 192, depth: 12, heads: 3, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1 }
}

dino! {
    /// DINO on Fashion-MNIST, sized for 2 CPU cores: 2 global 28 px + 6 local 12 px crops,
    /// head 512/128/1024, 2 epochs of batch 64 (the project's reference recipe).
    pub FmnistSmall for FmnistSmallVit {
        head: { hidden: 512, bottleneck: 128, out: 1024, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 6 x 12 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04,
        center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 2, batch_size: 64,
        augment: {
            flip: 0.5,
            color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8,
            grayscale: off,
            blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3,
            solarize: threshold 0.5 p 0.2,
            normalize: mean [0.2860] std [0.3530],
        },
    }
}

dino! {
    /// ViT-Ti (depth 12) on Fashion-MNIST: head 2048/256/4096, otherwise as `FmnistSmall`.
    pub FmnistTiny for FmnistTinyVit {
        head: { hidden: 2048, bottleneck: 256, out: 4096, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 6 x 12 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04,
        center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 2, batch_size: 64,
        augment: {
            flip: 0.5,
            color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8,
            grayscale: off,
            blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3,
            solarize: threshold 0.5 p 0.2,
            normalize: mean [0.2860] std [0.3530],
        },
    }
}

vit! {
    /// A fast ViT for 28x28 grayscale images: 4x4 patches of 7 px (16 tokens), width 128,
    /// depth 4, no stochastic depth: about 3x the images per second of `FmnistSmallVit`.
    pub FmnistFastVit { image: 28, patch: 7, channels: 1, dim: 128, depth: 4, heads: 4, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.0 }
}

dino! {
    /// The recipe that ranked best in the Fashion-MNIST proxy runs (README, "Quality on
    /// Fashion-MNIST"): `FmnistFastVit`, 2 x 28 px global + 6 x 14 px local crops, a sharp
    /// teacher (0.02 from the start), a faster teacher (momentum 0.99), twice the lr, the last
    /// layer never frozen, 17 epochs (about 55 minutes of training on 2 cores).
    pub FmnistFast for FmnistFastVit {
        head: { hidden: 512, bottleneck: 128, out: 1024, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 6 x 14 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.02,
        center_momentum: 0.9, teacher_momentum: 0.99 -> 1.0 cosine,
        optimizer: adamw { lr: 1e-3 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 0 epochs, epochs: 17, batch_size: 64,
        augment: {
            flip: 0.5,
            color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8,
            grayscale: off,
            blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3,
            solarize: threshold 0.5 p 0.2,
            normalize: mean [0.2860] std [0.3530],
        },
    }
}

dino! {
    /// `FmnistFast` with DINOv2's KoLeo regularizer (weight 0.1) on the student's global
    /// [CLS] features, 14 epochs: the recipe of the main job (README, "Quality on
    /// Fashion-MNIST"), about 55 minutes of training on 2 cores as 2 MPI ranks.
    pub FmnistKoleo for FmnistFastVit {
        head: { hidden: 512, bottleneck: 128, out: 1024, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 6 x 14 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.02,
        center_momentum: 0.9, teacher_momentum: 0.99 -> 1.0 cosine,
        optimizer: adamw { lr: 1e-3 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 0 epochs, epochs: 14, batch_size: 64, koleo: 0.1,
        augment: {
            flip: 0.5,
            color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8,
            grayscale: off,
            blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3,
            solarize: threshold 0.5 p 0.2,
            normalize: mean [0.2860] std [0.3530],
        },
    }
}

dino! {
    /// DINOv2's objective at Fashion-MNIST size: `FmnistKoleo` (KoLeo 0.1) plus iBOT through
    /// the DINO head, as DINOv2 defaults it (half the global crops masked, 10-50% of their 16
    /// patches, weight 1).
    pub FmnistDinov2 for FmnistFastVit {
        head: { hidden: 512, bottleneck: 128, out: 1024, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 6 x 14 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.02,
        center_momentum: 0.9, teacher_momentum: 0.99 -> 1.0 cosine,
        optimizer: adamw { lr: 1e-3 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 0 epochs, epochs: 14, batch_size: 64, koleo: 0.1,
        ibot: { weight: 1.0, mask_ratio: 0.1..0.5, mask_probability: 0.5 },
        augment: {
            flip: 0.5,
            color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8,
            grayscale: off,
            blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3,
            solarize: threshold 0.5 p 0.2,
            normalize: mean [0.2860] std [0.3530],
        },
    }
}

vit! {
    /// `FmnistFastVit` at width 192 (6 heads of 32): 16 tokens of 7 px patches, depth 4.
    pub FmnistWideVit { image: 28, patch: 7, channels: 1, dim: 192, depth: 4, heads: 6, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.0 }
}

dino! {
    /// `FmnistKoleo`'s recipe on the wider `FmnistWideVit`, 8 epochs: the recipe of the main job
    /// (README, "Quality on Fashion-MNIST"), 54 minutes of training on 2 cores as 2 MPI ranks,
    /// teacher k-NN 85.50% (k=20) on the full test set.
    pub FmnistWide for FmnistWideVit {
        head: { hidden: 512, bottleneck: 128, out: 1024, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 6 x 14 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.02,
        center_momentum: 0.9, teacher_momentum: 0.99 -> 1.0 cosine,
        optimizer: adamw { lr: 1e-3 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 0 epochs, epochs: 8, batch_size: 64, koleo: 0.1,
        augment: {
            flip: 0.5,
            color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8,
            grayscale: off,
            blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3,
            solarize: threshold 0.5 p 0.2,
            normalize: mean [0.2860] std [0.3530],
        },
    }
}
