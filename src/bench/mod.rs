//! The engine benchmark (`dino bench engine`): workloads, in-process measurement, and the
//! driver that runs every implementation in its own process (clean peak-RSS figures); and the
//! pass ablation (`dino bench passes`).
pub mod measure;
pub mod passes;
pub mod passes_table;
pub mod startup;
pub mod workloads;

pub use measure::{measure, Impl, Measurement};
pub use workloads::Workload;
