//! Backends: the graph passes that turn a primitive luminal graph into kernels, and the
//! devices that run them.
//!
//! The passes are device-neutral: [`gemm::GemmPass`] turns contractions into [`gemm::GemmOp`]
//! nodes, [`fusion::FusionPass`] turns everything else into [`fused::FusedOp`] nodes carrying
//! an [`ir::Program`]. [`plan`] turns the compiled graph into a device-neutral [`plan::Plan`];
//! each device backend (`cpu`, `cuda`) runs plans behind the [`executor::Executor`] trait and
//! imports no other backend.
pub mod cpu;
pub mod cse;
pub mod cuda;
pub mod executor;
pub mod fused;
pub mod fusion;
pub mod gemm;
pub mod ir;
pub mod layout;
pub mod logged;
pub mod plan;
pub mod row_fusion;

use cse::{CsePass, DeadCodePass};
use fusion::FusionPass;
use gemm::GemmPass;
use logged::Logged;
use row_fusion::RowFusionPass;

/// The pass pipeline every device runs: drop dead nodes, share common subexpressions,
/// contractions to GEMMs, everything else to fused kernels, row reductions into the kernels
/// that use them. Run it after autograd and the optimizer builders, then plan and execute
/// with an [`executor::Executor`] (or luminal's own executor, slower, on the CPU).
pub type Passes = (Logged<DeadCodePass>, Logged<CsePass>, Logged<GemmPass>, Logged<FusionPass>, Logged<RowFusionPass>);
