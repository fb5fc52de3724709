//! Backends: the graph passes that turn a primitive luminal graph into kernels, and the
//! devices that run them.
//!
//! The passes are device-neutral: [`gemm::GemmPass`] turns contractions into [`gemm::GemmOp`]
//! nodes, [`fusion::FusionPass`] turns everything else into [`fused::FusedOp`] nodes carrying
//! an [`ir::Program`]. [`plan`] turns the compiled graph into a device-neutral [`plan::Plan`];
//! each device backend (`cpu`, `cuda`) runs plans behind the [`executor::Executor`] trait and
//! imports no other backend. [`passes::Passes`] is the pipeline: named passes, each one
//! switchable, users' own among them.
pub mod cpu;
pub mod cse;
pub mod cuda;
pub mod executor;
pub mod fused;
pub mod fusion;
pub mod gemm;
pub mod ir;
pub mod layout;
pub mod passes;
pub mod plan;
pub mod row_fusion;

pub use passes::{Builtin, Pass, Passes};
