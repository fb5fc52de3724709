//! Optimizers built into the training graph.
//!
//! One execution computes the loss, the gradients and the new parameters and optimizer
//! state; the host only sets per-step hyperparameters (1-element inputs, so a schedule never
//! recompiles anything) and then *moves* the new tensors into the old slots
//! ([`Optimizer::post_step`]): weights are never copied.
//!
//! Rules shared by both optimizers, as in the DINO reference:
//! * weight decay applies only to parameters with more than one dimension (not to biases
//!   and norm parameters);
//! * optional gradient clipping is per parameter (DINO: each gradient against its own norm)
//!   or per module (DINOv2: `clip_grad_norm_` over each top-level module, see [`ClipScope`]);
//! * parameters are split into groups with their own lr scale and their own step count; a
//!   *frozen* group is skipped entirely, as PyTorch skips a parameter whose `.grad` is `None`
//!   (DINO's last-layer freeze): no update, no decay, no change of its optimizer state; or,
//!   with [`FreezeRule::ZeroLr`], stepped at lr 0 (DINOv2: moments and step count move on);
//! * each parameter may carry a constant lr multiplier (DINOv2's layer-wise decay and
//!   patch-embedding multiplier): the parameters of a group with the same multiplier share
//!   one set of scalar inputs, computed on the host as `lr * scale * multiplier`:
//!
//! ```text
//!  group "default" ── x1.0   scalars optim.default.*        (heads, final norm)
//!                  ── x0.9   scalars optim.default.lr1.*    (last block)
//!                  ── x0.81  scalars optim.default.lr2.*    (block before) ...
//! ```
mod adamw;
mod clip;
mod optimizer;
mod sgd;

pub use adamw::AdamWConfig;
pub use clip::ClipScope;
pub use optimizer::{decays, Clip, FreezeRule, Group, Optimizer, OptimizerKind, OptimizerSpec};
pub use sgd::SgdConfig;
