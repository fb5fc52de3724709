//! DINOv2's per-parameter lr multipliers (`dinov2/utils/param_groups.py`): layer-wise lr decay
//! over the backbone's depth and a multiplier of the patch embedding.
//!
//! ```text
//!  backbone.patch_embed.*         decay^(L+1) * patch_embed_lr      layer 0
//!  backbone.{cls,pos_embed,mask_token}
//!                                 decay^(L+1)                       layer 0
//!  backbone.blocks.i.*            decay^(L-i)                       layer i+1
//!  backbone.norm.*, backbone.register_tokens
//!                                 1                                 layer L+1
//!  head.*, ibot_head.*            1                                 (DINOv2 runs the rule on
//!                                                                    each head apart: no blocks)
//! ```
//!
//! As in the reference, the register tokens are not among the layer-0 names: they keep the
//! full rate.

/// The lr multiplier of the student parameter `name` in a backbone of `depth` blocks.
pub fn lr_multiplier(name: &str, depth: usize, decay: f64, patch_embed_lr: f64) -> f64 {
    let Some(rest) = name.strip_prefix("backbone.") else {
        return 1.0;
    };
    let layer = if ["pos_embed", "patch_embed", "mask_token", "cls_token"].iter().any(|k| rest.contains(k)) {
        0
    } else if let Some(block) = rest.strip_prefix("blocks.") {
        match block.split('.').next().and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => i + 1,
            None => depth + 1,
        }
    } else {
        depth + 1
    };
    let rate = decay.powi((depth + 1 - layer.min(depth + 1)) as i32);
    if rest.contains("patch_embed") {
        rate * patch_embed_lr
    } else {
        rate
    }
}

#[cfg(test)]
mod tests {
    use super::lr_multiplier;

    /// DINOv2's `get_vit_lr_decay_rate` and `patch_embed_lr_mult` for a 12-block ViT-S/14
    /// with decay 0.9 and multiplier 0.2: the values its log prints.
    #[test]
    fn multipliers_follow_dinov2() {
        let m = |n: &str| lr_multiplier(n, 12, 0.9, 0.2);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12 * b.abs().max(1.0);
        assert!(close(m("backbone.patch_embed.proj.weight"), 0.9f64.powi(13) * 0.2));
        assert!(close(m("backbone.cls_token"), 0.9f64.powi(13)));
        assert!(close(m("backbone.pos_embed"), 0.9f64.powi(13)));
        assert!(close(m("backbone.mask_token"), 0.9f64.powi(13)));
        assert!(close(m("backbone.blocks.0.attn.qkv.weight"), 0.9f64.powi(12)));
        assert!(close(m("backbone.blocks.11.ls2.gamma"), 0.9));
        assert_eq!(m("backbone.norm.weight"), 1.0);
        assert_eq!(m("backbone.register_tokens"), 1.0);
        assert_eq!(m("head.mlp.0.weight"), 1.0);
        assert_eq!(m("ibot_head.last_layer.weight_v"), 1.0);
        // off: every multiplier 1
        for n in ["backbone.patch_embed.proj.bias", "backbone.blocks.3.mlp.fc1.weight", "head.last_layer.weight_g"] {
            assert_eq!(lr_multiplier(n, 12, 1.0, 1.0), 1.0);
        }
    }
}
