//! DINO's objective: the loss, the center and the momentum teacher, in the graph; one
//! training step as one graph.
pub mod ema;
mod entropy;
pub mod ibot;
pub mod ibot_step;
pub mod koleo;
pub mod loss;
pub mod param_groups;
pub mod schedule;
pub mod sinkhorn;
pub mod step;

pub use ema::ema_update;
pub use ibot::{ibot_center_update, ibot_loss, ibot_sinkhorn_knopp, ibot_targets};
pub use koleo::koleo_loss;
pub use loss::{center_update, dino_loss, dino_loss_of};
pub use schedule::Schedules;
pub use sinkhorn::sinkhorn_knopp;
pub use step::{DinoStep, StepHyper, StepOutputs};
