//! The tiny objective the rule tests run (`dino_rules.rs`, `dinov2_optimizer_rules.rs`):
//! 8 px crops of 4 px patches, a 2-block ViT, no clipping, the last layer frozen for an epoch.
use dino::runtime::dino::DinoStep;

dino::vit! {
    pub RuleVit { image: 8, patch: 4, channels: 1, dim: 8, depth: 2, heads: 2, mlp: 16, drop_path: 0.0 }
}

dino::dino! {
    pub RuleDino for RuleVit {
        head: { hidden: 16, bottleneck: 8, out: 12, layers: 3, norm_last_layer: false },
        crops: { global: 2 x 8 scale 0.4..1.0, local: 2 x 4 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
        teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4, warmup: 0 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 0.0, freeze_last_layer: 1 epochs,
        augment: { normalize: mean [0.5] std [0.5] },
    }
}

/// Every student tensor by name, in optimizer order.
pub fn student(s: &DinoStep<RuleDino>) -> Vec<(String, Vec<f32>)> {
    s.student_params
        .params
        .iter()
        .map(|p| (p.name.clone(), s.student_params.values(&s.train.cx, &p.name).unwrap().to_vec()))
        .collect()
}
