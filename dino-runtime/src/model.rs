//! What declared models are, for code generic over them (the trainer, the CLI).
use luminal::prelude::*;

use crate::config::{DinoConfig, VitConfig};
use crate::nn::vit::VitLayers;
use crate::nn::{BranchMasks, Parameters};

/// A ViT backbone declared with `vit!`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a ViT declared with `vit!`",
    label = "this must name a `vit!` declaration",
    note = "declare it first: `dino::vit! {{ pub MyVit {{ image: 224, patch: 16, dim: 384, depth: 12, heads: 6 }} }}`"
)]
pub trait VitModel: Parameters + Sized {
    /// The declaration.
    const CONFIG: VitConfig;
    const IMAGE: usize = Self::CONFIG.image;
    const PATCH: usize = Self::CONFIG.patch;
    const CHANNELS: usize = Self::CONFIG.channels;
    const DIM: usize = Self::CONFIG.dim;
    const HEADS: usize = Self::CONFIG.heads;
    const REGISTERS: usize = Self::CONFIG.registers;
    /// The backbone's layers (a `nn::VisionTransformer`).
    type Vit: VitLayers;
    /// Create the parameter nodes in `cx`.
    fn new(cx: &mut Graph) -> Self;
    /// The same with another LayerNorm epsilon.
    fn new_with_eps(cx: &mut Graph, eps: f32) -> Self;
    fn vit(&self) -> &Self::Vit;
    /// `Parameters::visit`, reachable through this trait (generated code names only this
    /// trait, so a type that is not a declared ViT gets one error, not one per use).
    fn visit_backbone(&self, v: &mut crate::nn::ParamVisitor) {
        Parameters::visit(self, v)
    }
}

/// A DINO objective declared with `dino!`: a student/teacher network (backbone + head), with
/// its dimensions as types so generic code (the training step) stays shape-checked.
pub trait DinoModel: Parameters + Sized {
    const CONFIG: DinoConfig;
    /// The `vit!` backbone.
    type Backbone: VitModel;
    /// Image channels.
    type Channels: Dimension;
    /// Side of the global crops.
    type Global: Dimension;
    /// Side of the local crops (unused without local crops).
    type Local: Dimension;
    /// Backbone width.
    type Embed: Dimension;
    /// Prototypes K.
    type Out: Dimension;
    /// Patches of a global crop.
    type GlobalPatches: Dimension;
    /// Create the parameter nodes in `cx` (call twice for student and teacher).
    fn new(cx: &mut Graph) -> Self;
    /// The backbone (its parameters are this network's `backbone.*`).
    fn backbone(&self) -> &Self::Backbone;
    /// The backbone's [CLS] features of global crops.
    fn backbone_global<B: Dimension>(
        &self,
        x: GraphTensor<(B, Self::Channels, Self::Global, Self::Global)>,
    ) -> GraphTensor<(B, Self::Embed)>;
    /// The backbone's [CLS] features of local crops.
    fn backbone_local<B: Dimension>(
        &self,
        x: GraphTensor<(B, Self::Channels, Self::Local, Self::Local)>,
    ) -> GraphTensor<(B, Self::Embed)>;
    /// [`backbone_global`](Self::backbone_global) with stochastic depth: `drop[i]` are the
    /// branch masks of block `i` (see [`crate::nn::drop_path`]).
    fn backbone_global_drop<B: Dimension>(
        &self,
        x: GraphTensor<(B, Self::Channels, Self::Global, Self::Global)>,
        drop: &[BranchMasks<B>],
    ) -> GraphTensor<(B, Self::Embed)>;
    /// [`backbone_local`](Self::backbone_local) with stochastic depth.
    fn backbone_local_drop<B: Dimension>(
        &self,
        x: GraphTensor<(B, Self::Channels, Self::Local, Self::Local)>,
        drop: &[BranchMasks<B>],
    ) -> GraphTensor<(B, Self::Embed)>;
    /// The projection head.
    fn head<B: Dimension>(&self, z: GraphTensor<(B, Self::Embed)>) -> GraphTensor<(B, Self::Out)>;
    /// The normalized [CLS] features and patch tokens (registers left out) of global crops,
    /// with stochastic depth; with `mask` (1: masked) the masked patches enter as iBOT's mask
    /// token (a mask needs an objective declared with `ibot`).
    #[allow(clippy::type_complexity)]
    fn backbone_global_tokens<B: Dimension>(
        &self,
        x: GraphTensor<(B, Self::Channels, Self::Global, Self::Global)>,
        mask: Option<GraphTensor<(B, Self::GlobalPatches)>>,
        drop: &[BranchMasks<B>],
    ) -> (GraphTensor<(B, Self::Embed)>, GraphTensor<(B, Self::GlobalPatches, Self::Embed)>);
    /// The head of iBOT's patch tokens: the DINO head, or iBOT's own when declared separate.
    fn ibot_head<B: Dimension>(&self, z: GraphTensor<(B, Self::Embed)>) -> GraphTensor<(B, Self::Out)>;
}
