//! Helpers over luminal's graph: views detached from edges and raw primitive builders.
pub mod data;
pub mod detach;
pub mod dims;
pub mod ops;
pub mod view;

pub use data::Handles;
pub use detach::{detach, with_gradient, Detach};
pub use view::View;
