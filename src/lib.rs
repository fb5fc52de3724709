//! dino: DINO self-supervised learning of Vision Transformers on luminal graphs.
pub use dino_runtime as runtime;

pub mod bench;
pub mod cli;
