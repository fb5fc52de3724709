//! The device-neutral result of compilation (DESIGN §4: the plan is the interface).
//!
//! ```text
//! compiled graph (GemmOp, FusedOp, constants, inputs)
//!     └─► Planner::plan ─► Plan { steps: [Step { work, srcs, dtype, loc }], arena_bytes, ... }
//!                              │ work: FusedKernel (fusion IR bound to strides) | GemmPlan | Value
//!                              │       | AllReduce (in buckets: the process group's calls)
//!                              ├─► cpu::CpuRuntime   (interprets kernels, gemm crate)
//!                              └─► cuda::CudaRuntime (CUDA C from the kernels, cuBLAS calls)
//! ```
//!
//! - [`schedule`]: candidate execution orders;
//! - [`arena`]: byte offsets of intermediates that share one arena;
//! - [`kernel`]: a fused kernel bound to concrete dims and layouts;
//! - [`contraction`]: a contraction bound to concrete strides;
//! - [`precision`]: the precision pass, a storage type for every buffer;
//! - [`collective`]: the all-reduce steps of a data-parallel step, in buckets;
//! - [`wire`]: a plan as bytes (artifacts), and the validation that makes one from a file
//!   safe to run;
//! - [`build`]: the plan itself, the planner, and the input/kept-output bookkeeping every
//!   executor shares.
//!
//! Nothing here knows a device: no backend module is imported (a test in `tests/layering.rs`
//! checks it).
pub mod arena;
pub mod build;
pub mod collective;
pub mod contraction;
pub mod kernel;
pub mod precision;
pub mod schedule;
pub mod wire;

pub use build::{dyn_dims, DType, DynDims, Loc, Plan, PlanOptions, Planner, Reduce, Step, Work};
pub use collective::Bucket;
pub use contraction::GemmPlan;
pub use kernel::FusedKernel;
pub use precision::{OpClass, Policy, Precision, Storage};
