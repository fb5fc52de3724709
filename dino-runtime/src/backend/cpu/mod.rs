//! The CPU backend: kernels for GEMM and fused-kernel nodes, and the executor that runs a
//! compiled graph with planned buffers.
pub mod arena;
pub mod eval;
pub mod fused;
pub mod gemm;
pub mod math;
pub mod runtime;
pub mod schedule;

pub use runtime::{CpuRuntime, RunStats};

use crate::backend::cse::{CsePass, DeadCodePass};
use crate::backend::fusion::FusionPass;
use crate::backend::gemm::GemmPass;
use crate::backend::logged::Logged;
use crate::backend::row_fusion::RowFusionPass;

/// The CPU pipeline: drop dead nodes, share common subexpressions, contractions to GEMMs,
/// everything else to fused kernels, row reductions into the kernels that use them. Run it
/// after autograd and the optimizer builders, then execute with [`CpuRuntime`] (or luminal's
/// own executor, slower).
pub type CpuCompiler =
    (Logged<DeadCodePass>, Logged<CsePass>, Logged<GemmPass>, Logged<FusionPass>, Logged<RowFusionPass>);
