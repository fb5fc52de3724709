//! The zoo by name, for the command line.
use dino_runtime::config::{DinoConfig, VitConfig};

use crate::*;

/// A declared backbone or DINO objective.
#[derive(Debug, Clone, Copy)]
pub enum Preset {
    Backbone(VitConfig),
    Dino(DinoConfig),
}

/// One entry of the zoo.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The name the command line uses.
    pub name: &'static str,
    pub preset: Preset,
}

/// Every declaration of the zoo.
pub const REGISTRY: &[Entry] = &[
    Entry { name: "vit-tiny-16", preset: Preset::Backbone(VitTiny16::CONFIG) },
    Entry { name: "vit-tiny-8", preset: Preset::Backbone(VitTiny8::CONFIG) },
    Entry { name: "vit-small-16", preset: Preset::Backbone(VitSmall16::CONFIG) },
    Entry { name: "vit-small-8", preset: Preset::Backbone(VitSmall8::CONFIG) },
    Entry { name: "vit-base-16", preset: Preset::Backbone(VitBase16::CONFIG) },
    Entry { name: "vit-base-8", preset: Preset::Backbone(VitBase8::CONFIG) },
    Entry { name: "vit-small-14", preset: Preset::Backbone(VitSmall14::CONFIG) },
    Entry { name: "vit-small-14-reg4", preset: Preset::Backbone(VitSmall14Reg4::CONFIG) },
    Entry { name: "dino-vits16", preset: Preset::Dino(DinoVitS16::CONFIG) },
    Entry { name: "dino-vits16-paper", preset: Preset::Dino(DinoVitS16Paper::CONFIG) },
    Entry { name: "dino-vits16-boost", preset: Preset::Dino(DinoVitS16Boost::CONFIG) },
    Entry { name: "dino-vits16-release", preset: Preset::Dino(DinoVitS16Release::CONFIG) },
    Entry { name: "dino-vits8-release", preset: Preset::Dino(DinoVitS8Release::CONFIG) },
    Entry { name: "dino-vitb16-release", preset: Preset::Dino(DinoVitB16Release::CONFIG) },
    Entry { name: "fmnist-small", preset: Preset::Dino(FmnistSmall::CONFIG) },
    Entry { name: "fmnist-tiny", preset: Preset::Dino(FmnistTiny::CONFIG) },
    Entry { name: "fmnist-fast", preset: Preset::Dino(FmnistFast::CONFIG) },
    Entry { name: "fmnist-koleo", preset: Preset::Dino(FmnistKoleo::CONFIG) },
    Entry { name: "fmnist-dinov2", preset: Preset::Dino(FmnistDinov2::CONFIG) },
    Entry { name: "fmnist-wide", preset: Preset::Dino(FmnistWide::CONFIG) },
    Entry { name: "dinov2-vits14", preset: Preset::Dino(Dinov2VitS14::CONFIG) },
    Entry { name: "dinov2-vits14-reg4", preset: Preset::Dino(Dinov2VitS14Reg4::CONFIG) },
];

/// The entry with this name.
pub fn find(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// Code generic over a DINO objective, run for one chosen by name ([`with_dino`]).
pub trait DinoVisitor {
    type Output;
    fn visit<M: dino_runtime::model::DinoModel>(self, name: &'static str) -> Self::Output;
}

/// Run `v` for the DINO preset called `name`; `None` if there is no such preset.
pub fn with_dino<V: DinoVisitor>(name: &str, v: V) -> Option<V::Output> {
    Some(match name {
        "dino-vits16" => v.visit::<DinoVitS16>("dino-vits16"),
        "dino-vits16-paper" => v.visit::<DinoVitS16Paper>("dino-vits16-paper"),
        "dino-vits16-boost" => v.visit::<DinoVitS16Boost>("dino-vits16-boost"),
        "dino-vits16-release" => v.visit::<DinoVitS16Release>("dino-vits16-release"),
        "dino-vits8-release" => v.visit::<DinoVitS8Release>("dino-vits8-release"),
        "dino-vitb16-release" => v.visit::<DinoVitB16Release>("dino-vitb16-release"),
        "fmnist-small" => v.visit::<FmnistSmall>("fmnist-small"),
        "fmnist-tiny" => v.visit::<FmnistTiny>("fmnist-tiny"),
        "fmnist-fast" => v.visit::<FmnistFast>("fmnist-fast"),
        "fmnist-koleo" => v.visit::<FmnistKoleo>("fmnist-koleo"),
        "fmnist-dinov2" => v.visit::<FmnistDinov2>("fmnist-dinov2"),
        "fmnist-wide" => v.visit::<FmnistWide>("fmnist-wide"),
        "dinov2-vits14" => v.visit::<Dinov2VitS14>("dinov2-vits14"),
        "dinov2-vits14-reg4" => v.visit::<Dinov2VitS14Reg4>("dinov2-vits14-reg4"),
        _ => return None,
    })
}

/// Names of the DINO presets.
pub fn dino_names() -> Vec<&'static str> {
    REGISTRY.iter().filter(|e| matches!(e.preset, Preset::Dino(_))).map(|e| e.name).collect()
}

/// Code generic over a ViT backbone, run for one chosen by name ([`with_vit`]).
pub trait VitVisitor {
    type Output;
    fn visit<V: dino_runtime::model::VitModel>(self, name: &'static str) -> Self::Output;
}

/// Run `v` for the backbone called `name`, or for the backbone of the DINO preset called
/// `name`; `None` if there is neither.
pub fn with_vit<V: VitVisitor>(name: &str, v: V) -> Option<V::Output> {
    Some(match name {
        "vit-tiny-16" => v.visit::<VitTiny16>("vit-tiny-16"),
        "vit-tiny-8" => v.visit::<VitTiny8>("vit-tiny-8"),
        "vit-small-16" | "dino-vits16" | "dino-vits16-paper" | "dino-vits16-boost" | "dino-vits16-release" => {
            v.visit::<VitSmall16>("vit-small-16")
        }
        "vit-small-8" | "dino-vits8-release" => v.visit::<VitSmall8>("vit-small-8"),
        "vit-base-16" | "dino-vitb16-release" => v.visit::<VitBase16>("vit-base-16"),
        "vit-base-8" => v.visit::<VitBase8>("vit-base-8"),
        "fmnist-small" => v.visit::<FmnistSmallVit>("fmnist-small"),
        "fmnist-tiny" => v.visit::<FmnistTinyVit>("fmnist-tiny"),
        "fmnist-fast" | "fmnist-koleo" | "fmnist-dinov2" => v.visit::<FmnistFastVit>("fmnist-fast"),
        "fmnist-wide" => v.visit::<FmnistWideVit>("fmnist-wide"),
        "vit-small-14" | "dinov2-vits14" => v.visit::<VitSmall14>("vit-small-14"),
        "vit-small-14-reg4" | "dinov2-vits14-reg4" => v.visit::<VitSmall14Reg4>("vit-small-14-reg4"),
        _ => return None,
    })
}

/// Names [`with_vit`] accepts.
pub fn vit_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}
