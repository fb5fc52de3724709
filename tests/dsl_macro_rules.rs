//! Declarations written through a user's own `macro_rules!` (a family of variants from one
//! template) expand, compile and build the same networks as the same declarations written out.
//! The `dino!` expansion once gave `self` and the crop tensors the span of the backbone's name,
//! which macro hygiene then hid from the generated methods.
use dino::runtime::nn::ParamSet;
use luminal::prelude::*;

mod common;
use common::mini::{MiniDino, MiniVit};

/// A DINO objective on `$vit` whose local crops are `$local` px: the rest as `MiniDino`.
macro_rules! mini_variant {
    ($name:ident, $vit:ident, $local:literal) => {
        dino::dino! {
            /// A variant of MiniDino declared from a template.
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
fn a_templated_declaration_equals_the_written_one() {
    // the same declaration but for its name and doc comment
    let as_written = |mut c: dino::runtime::config::DinoConfig| {
        c.name = MiniDino::CONFIG.name;
        c.doc = MiniDino::CONFIG.doc;
        c
    };
    assert_eq!(as_written(Templated14::CONFIG), MiniDino::CONFIG);
    assert_eq!(Templated14::CONFIG.name, "Templated14");
    assert_ne!(as_written(Templated7::CONFIG), MiniDino::CONFIG);
    assert_eq!(Templated7::CONFIG.local.map(|c| c.size), Some(7));
}

/// Both crop sizes go through the backbone: the methods the expansion generated use their
/// own `self` and inputs.
#[test]
fn a_templated_declaration_builds_its_forward_passes() {
    let mut cx = Graph::new();
    let net = Templated7::new(&mut cx);
    let g = cx.tensor::<R4<3, 1, 28, 28>>();
    let l = cx.tensor::<R4<3, 1, 7, 7>>();
    let fg = net.backbone_global(g).retrieve();
    let fl = net.backbone_local(l).retrieve();
    assert_eq!(fg.shape.shape().len(), 2);
    assert_eq!(fl.shape.shape().len(), 2);
    let params = ParamSet::of(&net, &mut cx);
    let written = {
        let mut cx = Graph::new();
        let m = MiniDino::new(&mut cx);
        ParamSet::of(&m, &mut cx)
    };
    let names = |p: &ParamSet| p.params.iter().map(|i| (i.name.clone(), i.shape.clone())).collect::<Vec<_>>();
    assert_eq!(names(&params), names(&written));
    assert!(params.get("backbone.blocks.1.attn.qkv.weight").is_some());
}
