//! The dino model zoo, written only as `vit!` / `dino!` declarations.
//!
//! Backbones as in DINO's `vision_transformer.py` (`vit_tiny/small/base` at patch 16 and 8),
//! the DINO recipes of the paper, of the code defaults and of the released runs
//! (notes/dino-reference.md section 3), and presets sized for a CPU on Fashion-MNIST.
#![allow(clippy::excessive_precision)]

mod dino;
mod dinov2;
mod fmnist;
mod registry;
mod vit;

pub use dino::*;
pub use dinov2::*;
pub use fmnist::*;
pub use registry::{
    dino_names, find, vit_names, with_dino, with_vit, DinoVisitor, Entry, Preset, VitVisitor, REGISTRY,
};
pub use vit::*;

#[cfg(test)]
mod tests {
    use dino_runtime::config::{ClipScope, FreezeRule};
    use dino_runtime::model::{DinoModel, VitModel};
    use dino_runtime::nn::ParamSet;
    use luminal::prelude::Graph;

    use super::*;

    fn counted<M: VitModel>() -> usize {
        let mut cx = Graph::new();
        let m = M::new(&mut cx);
        ParamSet::of(&m, &mut cx).numel()
    }

    /// DINO's official backbone sizes (notes/dino-reference.md 7.1), from the declarations
    /// and from the parameter tensors actually built.
    #[test]
    fn backbone_parameter_counts_are_the_official_ones() {
        for (cfg, built, want) in [
            (VitSmall16::CONFIG, counted::<VitSmall16>(), 21_665_664),
            (VitSmall8::CONFIG, counted::<VitSmall8>(), 21_670_272),
            (VitBase16::CONFIG, counted::<VitBase16>(), 85_798_656),
            (VitBase8::CONFIG, counted::<VitBase8>(), 85_807_872),
            // DINOv2's ViT-S/14 at 224 px: the released 518 px model's 22,056,576 less its
            // larger position grid (37 x 37 against 16 x 16) and its mask token (here the
            // objective's); with 4 registers, 4 tokens more
            (VitSmall14::CONFIG, counted::<VitSmall14>(), 22_056_576 - (1369 - 256) * 384 - 384),
            (VitSmall14Reg4::CONFIG, counted::<VitSmall14Reg4>(), 22_056_576 - (1369 - 256) * 384 - 384 + 4 * 384),
        ] {
            assert_eq!(cfg.num_params(), want, "{}", cfg.name);
            assert_eq!(built, want, "{} as built", cfg.name);
        }
    }

    #[test]
    fn dino_parameter_counts_match_the_built_networks() {
        fn built<M: DinoModel>() -> usize {
            let mut cx = Graph::new();
            let m = M::new(&mut cx);
            ParamSet::of(&m, &mut cx).numel()
        }
        assert_eq!(FmnistSmall::CONFIG.num_params(), built::<FmnistSmall>());
        assert_eq!(FmnistTiny::CONFIG.num_params(), built::<FmnistTiny>());
        assert_eq!(FmnistWide::CONFIG.num_params(), built::<FmnistWide>());
        // iBOT adds the mask token (and a separate head when declared)
        assert_eq!(FmnistDinov2::CONFIG.num_params(), built::<FmnistDinov2>());
        assert_eq!(FmnistDinov2::CONFIG.num_params(), FmnistKoleo::CONFIG.num_params() + 128);
        // DINOv2's ViT-S/14 with its mask token: the released model's count at 224 px
        let v2 = Dinov2VitS14::CONFIG;
        assert_eq!(v2.num_params() - v2.head.num_params(384), 22_056_576 - (1369 - 256) * 384);
        // ViT-S/16's DINO head alone is ~22.35M parameters (K x 256 = 16.8M of them)
        let head = DinoVitS16::CONFIG.head.num_params(384);
        assert!((22_300_000..22_400_000).contains(&head), "{head}");
    }

    #[test]
    fn registry_names_are_unique_and_findable() {
        for (i, e) in REGISTRY.iter().enumerate() {
            assert!(REGISTRY[i + 1..].iter().all(|o| o.name != e.name), "{} twice", e.name);
            assert_eq!(find(e.name).map(|f| f.name), Some(e.name));
        }
        let Preset::Dino(c) = find("fmnist-small").unwrap().preset else { panic!("a dino preset") };
        assert_eq!((c.global.size, c.local.unwrap().count, c.local.unwrap().size), (28, 6, 12));
        assert_eq!(c.augment.mean, &[0.2860]);
        assert_eq!(c.peak_lr(64), 5e-4 * 64.0 / 256.0);
        // DINOv2's sqrt_wrt_1024: 4e-3 * sqrt(64 / 1024) = 1e-3, and its lr multipliers
        let Preset::Dino(v2) = find("dinov2-vits14").unwrap().preset else { panic!("a dino preset") };
        assert!((v2.peak_lr(64) - 1e-3).abs() < 1e-15, "{}", v2.peak_lr(64));
        assert!((v2.lr_multiplier("backbone.patch_embed.proj.weight") - 0.2 * 0.9f64.powi(13)).abs() < 1e-15);
        assert!((v2.lr_multiplier("backbone.blocks.11.mlp.fc2.weight") - 0.9).abs() < 1e-15);
        assert_eq!(v2.lr_multiplier("head.last_layer.weight_v"), 1.0);
        assert_eq!((v2.clip_scope, v2.freeze_rule), (ClipScope::Module, FreezeRule::ZeroLr));
        // DINO's presets keep DINO's rules
        assert_eq!(c.lr_multiplier("backbone.patch_embed.proj.weight"), 1.0);
        assert_eq!((c.clip_scope, c.freeze_rule), (ClipScope::Parameter, FreezeRule::Skip));
    }

    #[test]
    fn every_dino_preset_dispatches_to_its_type() {
        struct Name;
        impl DinoVisitor for Name {
            type Output = &'static str;
            fn visit<M: DinoModel>(self, _: &'static str) -> &'static str {
                M::CONFIG.name
            }
        }
        for name in dino_names() {
            let Preset::Dino(c) = find(name).unwrap().preset else { unreachable!() };
            assert_eq!(with_dino(name, Name), Some(c.name), "{name}");
        }
        assert_eq!(with_dino("vit-small-16", Name), None);
    }
}
