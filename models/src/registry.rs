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
    Entry { name: "dino-vits16", preset: Preset::Dino(DinoVitS16::CONFIG) },
    Entry { name: "dino-vits16-paper", preset: Preset::Dino(DinoVitS16Paper::CONFIG) },
    Entry { name: "dino-vits16-boost", preset: Preset::Dino(DinoVitS16Boost::CONFIG) },
    Entry { name: "dino-vits16-release", preset: Preset::Dino(DinoVitS16Release::CONFIG) },
    Entry { name: "dino-vits8-release", preset: Preset::Dino(DinoVitS8Release::CONFIG) },
    Entry { name: "dino-vitb16-release", preset: Preset::Dino(DinoVitB16Release::CONFIG) },
    Entry { name: "fmnist-small", preset: Preset::Dino(FmnistSmall::CONFIG) },
    Entry { name: "fmnist-tiny", preset: Preset::Dino(FmnistTiny::CONFIG) },
];

/// The entry with this name.
pub fn find(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name)
}
