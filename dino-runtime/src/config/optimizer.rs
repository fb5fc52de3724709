//! The optimizer of a `dino!` declaration, as data.
use serde::Serialize;

/// The optimizers a `dino!` declaration can name (`optimizer: adamw { .. }`), written as
/// `"adamw"` / `"sgd"` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    AdamW,
    Sgd,
}

impl OptimizerName {
    /// The runtime optimizer (`momentum` is SGD's; AdamW uses DINO's betas and epsilon).
    pub fn build(self, momentum: f64) -> crate::optim::OptimizerKind {
        use crate::optim::{AdamWConfig, OptimizerKind, SgdConfig};
        match self {
            OptimizerName::AdamW => OptimizerKind::AdamW(AdamWConfig::default()),
            OptimizerName::Sgd => OptimizerKind::Sgd(SgdConfig { momentum: momentum as f32 }),
        }
    }
}

/// How a learning rate declared per `lr_per` images scales with the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LrScaling {
    /// `lr * batch / per` (DINO, Goyal et al.).
    Linear,
    /// `lr * sqrt(batch / per)` (DINOv2's `sqrt_wrt_1024`).
    Sqrt,
}

/// The optimizer and its schedules.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerName,
    /// Peak learning rate, for `lr_per` images per batch when set (scaled by `lr_scaling`).
    pub lr: f64,
    pub lr_per: Option<usize>,
    pub lr_scaling: LrScaling,
    pub warmup_epochs: f64,
    pub min_lr: f64,
    /// Start and end of the cosine weight-decay schedule.
    pub weight_decay: (f64, f64),
    /// SGD momentum.
    pub momentum: f64,
    /// DINOv2's layer-wise lr decay (`layerwise_decay`): block `i` of `L` gets
    /// `decay^(L - i)`, the embeddings `decay^(L + 1)`, the rest 1 (1: off).
    pub layer_decay: f64,
    /// DINOv2's lr multiplier of the patch embedding (`patch_embed_lr_mult`; 1: off).
    pub patch_embed_lr: f64,
}
