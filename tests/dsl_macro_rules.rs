//! `dino!` and `vit!` written by a user's `macro_rules!`: a family of variants declared from one
//! template expands exactly like the written-out declaration (same config, same parameters) and
//! its forward passes build. Hygiene matters here: the generated methods must see their own
//! arguments even when every token of the declaration comes from a macro.
use dino::runtime::nn::ParamSet;
use luminal::prelude::*;

mod common;
use common::mini::{MiniDino, MiniVit};

/// One template, MiniDino's recipe, with the local crop size as the only free parameter.
macro_rules! mini_variant {
    ($name:ident, $vit:ident, $local:literal) => {
        dino::dino! {
            /// A templated variant of MiniDino.
            pub $name for $vit {
                head: { hidden: 64, bottleneck: 32, out: 128, layers: 3, norm_last_layer: true },
                crops: { global: 2 x 28 scale 0.4..1.0, local: 2 x $local scale 0.05..0.4 },
                student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
                teacher_momentum: 0.996 -> 1.0 cosine,
                optimizer: adamw { lr: 5e-4 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
                clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 2, batch_size: 16,
                augment: {
                    flip: 0.5, color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8, grayscale: off,
                    blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3, solarize: threshold 0.5 p 0.2,
                    normalize: mean [0.2860] std [0.3530],
                },
            }
        }
    };
}

mini_variant!(Templated14, MiniVit, 14);
mini_variant!(Templated7, MiniVit, 7);

#[test]
fn templated_declaration_has_the_written_out_config() {
    let mut cfg = Templated14::CONFIG;
    assert_eq!(cfg.name, "Templated14");
    cfg.name = MiniDino::CONFIG.name;
    cfg.doc = MiniDino::CONFIG.doc;
    assert_eq!(cfg, MiniDino::CONFIG);
    assert_eq!(Templated7::CONFIG.local.map(|c| c.size), Some(7));
    assert_ne!(Templated7::CONFIG, Templated14::CONFIG);
}

#[test]
fn templated_declaration_builds_its_passes_and_parameters() {
    let mut cx = Graph::new();
    let net = Templated7::new(&mut cx);
    let before = cx.graph.node_count();
    // The [CLS] features of 3 global crops of 28 px and 3 local crops of 7 px, width 32.
    let g: GraphTensor<R2<3, 32>> = net.backbone_global(cx.tensor::<R4<3, 1, 28, 28>>());
    let after_global = cx.graph.node_count();
    let l: GraphTensor<R2<3, 32>> = net.backbone_local(cx.tensor::<R4<3, 1, 7, 7>>());
    assert!(after_global > before && cx.graph.node_count() > after_global);
    assert_ne!(g.id, l.id);
    let params = ParamSet::of(&net, &mut cx);

    let mut cx2 = Graph::new();
    let reference = MiniDino::new(&mut cx2);
    let written = ParamSet::of(&reference, &mut cx2);
    let sig = |p: &ParamSet| p.params.iter().map(|i| (i.name.clone(), i.shape.clone())).collect::<Vec<_>>();
    assert_eq!(sig(&params), sig(&written));
    assert!(params.get("backbone.blocks.1.attn.qkv.weight").is_some());
}
