//! The CUDA backend (DESIGN §4): a device-neutral [`Plan`](crate::backend::plan::Plan) run on
//! a GPU, its contractions on cuBLAS and its fused kernels as NVRTC-compiled CUDA C, behind the
//! [`Executor`](crate::backend::executor::Executor) trait. It imports nothing of the CPU
//! backend.
//!
//! - `artifact` (feature `cuda`): a plan's kernels as CUBIN and PTX in a compiled artifact,
//!   checked against the plan when loaded.
//! - [`blas`]: a contraction's [`GemmPlan`](crate::backend::plan::GemmPlan) as
//!   column-major `cublasSgemmStridedBatched` calls (or which operand needs a copy first).
//! - [`codegen`]: a bound fused kernel as CUDA C (flat or one block per row, stages and
//!   reductions as block reductions).
//! - `device` (feature `cuda`): the GPU through cudarc with dynamic loading: library checks
//!   with clear errors, NVRTC compilation cached by source, kernel launches, cuBLAS calls.
//! - `plan` (feature `cuda`): a compiled graph's plan with its kernels as CUDA sources and its
//!   contractions as cuBLAS recipes.
//! - `device_plan` (feature `cuda`): a plan made ready for one GPU, from a graph or an
//!   artifact.
//! - `runtime` (feature `cuda`): that plan run with device buffers; tensors stay on the GPU
//!   between runs.
//! - `nccl` (feature `cuda`): the all-reduce steps of a data-parallel plan, bucket by bucket on
//!   a stream of their own.
//!
//! `blas` and `codegen` need no GPU and are tested on every machine: the cuBLAS calls by
//! emulating their documented semantics, the kernels by compiling them with the host C
//! compiler; both against the reference kernels (the CPU's interpretation of the same
//! bound kernels, called as methods of the plan's types).
#[cfg(feature = "cuda")]
pub mod artifact;
pub mod blas;
pub mod codegen;
#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
mod device_plan;
#[cfg(all(test, feature = "cuda"))]
mod gpu_tests;
#[cfg(feature = "cuda")]
pub mod nccl;
#[cfg(feature = "cuda")]
mod plan;
#[cfg(feature = "cuda")]
pub mod runtime;
