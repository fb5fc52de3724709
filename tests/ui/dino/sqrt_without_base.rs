dino::vit! {
    pub Vit { image: 224, patch: 16, dim: 192, depth: 2, heads: 3 }
}
dino::dino! {
    pub Objective for Vit {
        head: { hidden: 64, bottleneck: 32, out: 128 },
        crops: { global: 2 x 224 scale 0.4..1.0 },
        student_temp: 0.1, teacher_temp: 0.04, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 sqrt, warmup: 1 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        epochs: 10,
    }
}
fn main() {}
