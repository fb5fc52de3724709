//! Backends: the graph passes that turn a primitive luminal graph into kernels, and the
//! devices that run them.
//!
//! The passes are device-neutral: [`gemm::GemmPass`] turns contractions into [`gemm::GemmOp`]
//! nodes, [`fusion::FusionPass`] turns everything else into [`fused::FusedOp`] nodes carrying
//! an [`ir::Program`]. A device backend (`cpu`) executes those nodes.
pub mod cpu;
pub mod cse;
pub mod cuda;
pub mod fused;
pub mod fusion;
pub mod gemm;
pub mod ir;
pub mod layout;
pub mod logged;
pub mod row_fusion;
