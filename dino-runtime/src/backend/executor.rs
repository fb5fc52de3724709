//! The executor interface: what every device backend offers the code above it.
//!
//! A backend turns a [`Plan`](crate::backend::plan::Plan) of a compiled graph into something it
//! runs; the trainers, evaluators and benchmarks see only this trait, chosen once when a device
//! is opened. Tensors may live on the device between runs (weights, optimizer state): what the
//! host reads must first be brought back with [`Executor::to_host`].
use std::sync::Arc;

use luminal::prelude::*;

use crate::dist::Collective;
use crate::error::Result;

/// Per-run statistics of an executor.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Arena size in bytes (all intermediates).
    pub arena_bytes: usize,
    /// Steps run per execution (kernels, products, constants).
    pub kernels: usize,
    /// Launches per execution on a device (input copies and gathered calls included), when
    /// the executor counts them.
    pub launches: Option<usize>,
    /// The execution order chosen (the one with the smallest arena).
    pub order: &'static str,
}

/// Where a profiled run spent its time: one entry per kernel kind or shape.
#[derive(Debug, Clone)]
pub struct ProfileEntry {
    /// `fused k12 (...)`, `gemm 197x384x1152 (batch 128, 1 call)`, `Gemm 1x[...]` ...
    pub what: String,
    pub calls: usize,
    pub seconds: f64,
}

/// Totals per kind (the first word of each entry: `gemm`, `fused`, `copy`, ...): kind, calls,
/// seconds, longest first.
pub fn by_kind(entries: &[ProfileEntry]) -> Vec<(String, usize, f64)> {
    let mut kinds: Vec<(String, usize, f64)> = vec![];
    for p in entries {
        let kind = p.what.split_whitespace().next().unwrap_or("?");
        match kinds.iter_mut().find(|k| k.0 == kind) {
            Some(k) => {
                k.1 += p.calls;
                k.2 += p.seconds;
            }
            None => kinds.push((kind.to_string(), p.calls, p.seconds)),
        }
    }
    kinds.sort_by(|a, b| b.2.total_cmp(&a.2));
    kinds
}

/// Runs a compiled graph on one device.
pub trait Executor {
    /// The device, in words (`cpu (2 threads)`, `NVIDIA H200 (compute_90, 132 SMs)`).
    fn describe(&self) -> String;

    /// Plan for the current dynamic dims without running (the sizes land in [`Self::stats`]).
    fn plan(&mut self, cx: &Graph) -> Result<()>;

    /// Run the graph once: reads the inputs set in `cx`, leaves kept outputs in it (possibly
    /// on the device). A failed run gives back every input it took.
    fn execute(&mut self, cx: &mut Graph) -> Result<()>;

    /// Bring these tensors of `cx` to the host (as `Vec<f32>`, what CPU code reads).
    fn to_host(&mut self, cx: &mut Graph, nodes: &[NodeIndex]) -> Result<()>;

    /// Every tensor of `cx` held on the device back to the host (checkpoints, evaluation);
    /// the next run sends them up again.
    fn all_to_host(&mut self, cx: &mut Graph) -> Result<()>;

    /// Sum the plan's all-reduce steps over `group`'s ranks from now on (a data-parallel run;
    /// a plan with all-reduce steps refuses to run without one).
    fn set_collective(&mut self, group: Arc<dyn Collective>) -> Result<()>;

    /// Statistics of the last plan.
    fn stats(&self) -> RunStats;

    /// Time every step of the following runs alone, until [`Self::take_profile`].
    fn start_profile(&mut self);

    /// The profile since [`Self::start_profile`], longest first; stops profiling.
    fn take_profile(&mut self) -> Vec<ProfileEntry>;

    /// Run once and bring every tensor back to the host (tests read anything afterwards).
    fn execute_to_host(&mut self, cx: &mut Graph) -> Result<()> {
        self.execute(cx)?;
        self.all_to_host(cx)
    }

    /// Run once and bring `report` (losses, diagnostics, outputs) to the host.
    fn run(&mut self, cx: &mut Graph, report: &[NodeIndex]) -> Result<()> {
        self.execute(cx)?;
        self.to_host(cx, report)
    }
}
