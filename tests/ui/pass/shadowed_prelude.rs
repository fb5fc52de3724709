//! Both macros expand in a module that shadows the prelude's names, and the items work.
#![allow(dead_code, non_camel_case_types)]

struct Option;
struct Result;
struct Vec;
struct Box;
struct String;
struct usize;
struct f32;
struct f64;
mod core {}
mod std {}

dino::vit! {
    /// A tiny ViT for the test.
    pub TinyVit { image: 8, patch: 4, channels: 1, dim: 8, depth: 1, heads: 2, mlp: 16 }
}

dino::dino! {
    /// A tiny objective.
    pub TinyDino for TinyVit {
        head: { hidden: 16, bottleneck: 4, out: 32, layers: 2, norm_last_layer: false },
        crops: { global: 2 x 8 scale 0.4..1.0, local: 2 x 4 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 3 epochs,
        teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0 },
        augment: { normalize: mean [0.5] std [0.25], grayscale: off },
    }
}

fn main() {
    let mut cx = luminal::prelude::Graph::new();
    let m = TinyDino::new(&mut cx);
    let x = cx.named_tensor::<(luminal::prelude::Const<3>, luminal::prelude::Const<1>, luminal::prelude::Const<8>, luminal::prelude::Const<8>)>("x");
    let _logits: luminal::prelude::GraphTensor<(luminal::prelude::Const<3>, luminal::prelude::Const<32>)> = m.forward_global(x);
    assert_eq!(TinyDino::CONFIG.backbone.name, "TinyVit");
    assert_eq!(TinyVit::CONFIG.mlp, 16);
}
