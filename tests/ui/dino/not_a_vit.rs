pub struct NotAVit;

dino::dino! {
    pub Objective for NotAVit {
        head: { hidden: 64, bottleneck: 32, out: 128 },
        crops: { global: 2 x 224 scale 0.4..1.0 },
        student_temp: 0.1, teacher_temp: 0.04, teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 },
    }
}
fn main() {}
