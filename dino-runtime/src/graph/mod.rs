//! Helpers over luminal's graph: views detached from edges and raw primitive builders.
pub mod data;
pub mod ops;
pub mod view;

pub use data::Handles;
pub use view::View;
