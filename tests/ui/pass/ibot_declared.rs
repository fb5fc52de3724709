// iBOT with every key, and with none (DINOv2's defaults)
dino::vit! {
    pub Vit { image: 224, patch: 16, dim: 192, depth: 2, heads: 3, registers: 4 }
}
dino::dino! {
    pub Every for Vit {
        head: { hidden: 64, bottleneck: 32, out: 128 },
        crops: { global: 2 x 224 scale 0.4..1.0 },
        student_temp: 0.1, teacher_temp: 0.04, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 1 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        centering: sinkhorn_knopp(3),
        ibot: { weight: 0.5, mask_ratio: 0.2..0.4, mask_probability: 1.0, separate_head: true },
    }
}
dino::dino! {
    pub Defaults for Vit {
        head: { hidden: 64, bottleneck: 32, out: 128 },
        crops: { global: 2 x 224 scale 0.4..1.0 },
        student_temp: 0.1, teacher_temp: 0.04, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 1 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        ibot: {},
    }
}
fn main() {
    let e = Every::CONFIG.ibot.unwrap();
    assert_eq!((e.weight, e.mask_ratio, e.mask_probability, e.separate_head), (0.5, (0.2, 0.4), 1.0, true));
    assert_eq!(Defaults::CONFIG.ibot, Some(dino::runtime::config::IbotConfig::DINOV2));
    // the mask token, and the separate head's parameters
    let head = Every::CONFIG.head.num_params(192);
    assert_eq!(Every::CONFIG.num_params(), Defaults::CONFIG.num_params() + head);
}
