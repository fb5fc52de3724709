//! DINOv2's recipe (facebookresearch/dinov2, `ssl_default_config.yaml`) on its ViT-S/14, with
//! and without register tokens: DINO + iBOT (shared head) + KoLeo.
//!
//! The optimizer is DINOv2's: 4e-3 per 1024 images scaled by the square root of the batch
//! ratio (`sqrt_wrt_1024`), layer-wise lr decay 0.9, patch-embedding lr multiplier 0.2, each
//! module's gradient norm clipped at 3.0 (backbone and head apart), the last layer frozen for
//! an epoch by an lr of 0 (its AdamW moments still move).
//!
//! Where the declaration differs from the reference: stochastic depth grows linearly to 0.1
//! (DINOv2's ViT-L: 0.3, uniform), and the local crops are 98 px (7 whole 14 px patches;
//! DINOv2's 96 px leave 12 px unread).
use dino_macros::{dino, vit};

vit! {
    /// DINOv2's ViT-S/14 at its training size (224 px: 16 x 16 patches; the released weights'
    /// 37 x 37 position grid is resampled to it): LayerScale 1e-5, 22.1M parameters.
    pub VitSmall14 { image: 224, patch: 14, channels: 3, dim: 384, depth: 12, heads: 6, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, layer_scale: 1e-5, drop_path: 0.1 }
}

vit! {
    /// DINOv2's ViT-S/14 with 4 register tokens (Darcet et al. 2024).
    pub VitSmall14Reg4 { image: 224, patch: 14, channels: 3, dim: 384, depth: 12, heads: 6, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, layer_scale: 1e-5, registers: 4, drop_path: 0.1 }
}

dino! {
    /// DINOv2's default recipe on ViT-S/14: 2 x 224 + 8 x 98 px crops (scales 0.32 | 0.05..0.32),
    /// teacher 0.04 -> 0.07 over 30 epochs, momentum 0.992 -> 1, lr 4e-3 per 1024 (square root),
    /// layer-wise decay 0.9, KoLeo 0.1, iBOT through the DINO head on half the global crops
    /// (10-50% of their patches).
    pub Dinov2VitS14 for VitSmall14 {
        head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: false },
        crops: { global: 2 x 224 scale 0.32..1.0, local: 8 x 98 scale 0.05..0.32 },
        student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 30 epochs,
        center_momentum: 0.9, teacher_momentum: 0.992 -> 1.0 cosine,
        optimizer: adamw {
            lr: 4e-3 per 1024 sqrt, warmup: 10 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4,
            layer_decay: 0.9, patch_embed_lr: 0.2,
        },
        clip_grad: 3.0 per module, freeze_last_layer: 1 epochs zero_lr, epochs: 100, batch_size: 64,
        koleo: 0.1,
        ibot: { weight: 1.0, mask_ratio: 0.1..0.5, mask_probability: 0.5, separate_head: false },
    }
}

dino! {
    /// [`Dinov2VitS14`]'s recipe on ViT-S/14 with 4 registers.
    pub Dinov2VitS14Reg4 for VitSmall14Reg4 {
        head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: false },
        crops: { global: 2 x 224 scale 0.32..1.0, local: 8 x 98 scale 0.05..0.32 },
        student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 30 epochs,
        center_momentum: 0.9, teacher_momentum: 0.992 -> 1.0 cosine,
        optimizer: adamw {
            lr: 4e-3 per 1024 sqrt, warmup: 10 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4,
            layer_decay: 0.9, patch_embed_lr: 0.2,
        },
        clip_grad: 3.0 per module, freeze_last_layer: 1 epochs zero_lr, epochs: 100, batch_size: 64,
        koleo: 0.1,
        ibot: { weight: 1.0, mask_ratio: 0.1..0.5, mask_probability: 0.5, separate_head: false },
    }
}
