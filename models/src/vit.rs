//! ViT backbones of DINO (`vit_tiny`, `vit_small`, `vit_base`; patch 16 and 8).
use dino_macros::vit;

vit! {
    /// ViT-Ti/16 (DINO's `vit_tiny`, patch 16).
    pub VitTiny16 { image: 224, patch: 16, channels: 3, dim: 192, depth: 12, heads: 3, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1 }
}
vit! {
    /// ViT-Ti/8 (DINO's `vit_tiny`, patch 8).
    pub VitTiny8 { image: 224, patch: 8, channels: 3, dim: 192, depth: 12, heads: 3, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1 }
}
vit! {
    /// ViT-S/16 (DINO's `vit_small`, patch 16): 21.7M parameters.
    pub VitSmall16 { image: 224, patch: 16, channels: 3, dim: 384, depth: 12, heads: 6, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1 }
}
vit! {
    /// ViT-S/8 (DINO's `vit_small`, patch 8).
    pub VitSmall8 { image: 224, patch: 8, channels: 3, dim: 384, depth: 12, heads: 6, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1 }
}
vit! {
    /// ViT-B/16 (DINO's `vit_base`, patch 16): 85.8M parameters.
    pub VitBase16 { image: 224, patch: 16, channels: 3, dim: 768, depth: 12, heads: 12, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1 }
}
vit! {
    /// ViT-B/8 (DINO's `vit_base`, patch 8).
    pub VitBase8 { image: 224, patch: 8, channels: 3, dim: 768, depth: 12, heads: 12, mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1 }
}
