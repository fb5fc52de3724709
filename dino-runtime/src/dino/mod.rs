//! DINO's objective: the loss, the center and the momentum teacher, in the graph.
pub mod ema;
pub mod loss;

pub use ema::ema_update;
pub use loss::{center_update, dino_loss, DinoLossConfig};
