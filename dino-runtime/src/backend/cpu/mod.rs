//! The CPU backend: a [`Plan`](crate::backend::plan::Plan) run with one arena, fused kernels
//! interpreted over blocks of elements, contractions on the `gemm` crate, rayon threads.
mod collective;
pub mod eval;
pub mod fused;
pub mod gemm;
mod luminal_ops;
pub mod math;
pub mod primitive;
pub mod runtime;

pub use runtime::CpuRuntime;

/// The CPU's pipeline: the shared passes (every device compiles with them).
pub type CpuCompiler = crate::backend::Passes;
