//! DINO recipes: the code defaults of `main_dino.py`, the paper's, and the released runs.
use dino_macros::dino;

use crate::vit::*;

dino! {
    /// ViT-S/16 with the code defaults of `main_dino.py` (the README's 100-epoch "vanilla"
    /// run: 69.3% k-NN, 74.0% linear on ImageNet with 8 GPUs).
    pub DinoVitS16 for VitSmall16 {
        head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 224 scale 0.4..1.0, local: 8 x 96 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04,
        center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 10 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 100, batch_size: 64,
    }
}

dino! {
    /// ViT-S/16 as in the paper: teacher temperature 0.04 -> 0.07 over 30 epochs,
    /// 2x224 + 10x96 crops (Table 8's best multi-crop).
    pub DinoVitS16Paper for VitSmall16 {
        head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 224 scale 0.4..1.0, local: 10 x 96 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 30 epochs,
        center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 10 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 100, batch_size: 64,
    }
}

dino! {
    /// ViT-S/16, the README's 300-epoch "boosted" run (73.3% k-NN, 76.0% linear).
    pub DinoVitS16Boost for VitSmall16 {
        head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: false },
        crops: { global: 2 x 224 scale 0.4..1.0, local: 8 x 96 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 30 epochs,
        center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 10 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 300, batch_size: 64,
    }
}

dino! {
    /// ViT-S/16 as released (800 epochs; args.txt): no clipping, min lr 1e-5, scales
    /// (0.25, 1) / (0.05, 0.25), 10 local crops, free last layer.
    pub DinoVitS16Release for VitSmall16 {
        head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: false },
        crops: { global: 2 x 224 scale 0.25..1.0, local: 10 x 96 scale 0.05..0.25 },
        student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 30 epochs,
        center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 10 epochs, min_lr: 1e-5, weight_decay: 0.04 -> 0.4 },
        clip_grad: 0.0, freeze_last_layer: 1 epochs, epochs: 800, batch_size: 64,
    }
}

dino! {
    /// ViT-S/8 as released (800 epochs, 16 images per GPU on 64 GPUs).
    pub DinoVitS8Release for VitSmall8 {
        head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: false },
        crops: { global: 2 x 224 scale 0.4..1.0, local: 10 x 96 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 30 epochs,
        center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 10 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 800, batch_size: 16,
    }
}

dino! {
    /// ViT-B/16 as released (400 epochs): teacher warmup over 50 epochs, clip 0.3, last
    /// layer frozen for 3 epochs, lr 7.5e-4 per 256.
    pub DinoVitB16Release for VitBase16 {
        head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 224 scale 0.25..1.0, local: 10 x 96 scale 0.05..0.25 },
        student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 50 epochs,
        center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 7.5e-4 per 256, warmup: 10 epochs, min_lr: 2e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 0.3, freeze_last_layer: 3 epochs, epochs: 400, batch_size: 32,
    }
}
