//! Layers with the parameter shapes and names of the PyTorch reference.
pub mod activation;
pub mod attention;
pub mod block;
pub mod dino_head;
pub mod drop_path;
pub mod layer_norm;
pub mod layer_scale;
pub mod linear;
pub mod mlp;
pub mod param;
pub mod patch_embed;
pub mod pos_embed;
pub mod registers;
pub mod vit;

pub use activation::{gelu, log_softmax, silu, softmax};
pub use attention::Attention;
pub use block::{Block, BlockOptions, BranchMasks};
pub use dino_head::DinoHead;
pub use layer_norm::LayerNorm;
pub use layer_scale::LayerScale;
pub use linear::Linear;
pub use mlp::Mlp;
pub use param::{Init, ParamInfo, ParamSet, ParamVisitor, Parameters};
pub use patch_embed::PatchEmbed;
pub use registers::Registers;
pub use vit::{cls_of, VisionTransformer};
