//! From a compiled graph's device-neutral [`Plan`] to what the GPU runs: its distinct fused
//! kernels printed as CUDA C (the blocks of a ViT share theirs), and each contraction's cuBLAS
//! recipe. Needs no GPU.
use std::collections::HashMap;

use luminal::prelude::*;

use super::blas::{recipe, BlasPlan, NeedsCopy};
use super::codegen::{kernel_source, KernelSource};
use crate::backend::gemm::GemmOp;
use crate::backend::layout::Layout;
use crate::backend::plan::{FusedKernel, Plan, Planner, Work};
use crate::error::{Error, Result};

/// What the GPU runs for a compiled graph's plan, before any device is touched.
pub(super) struct PlanKernels {
    pub(super) plan: Plan,
    /// Distinct fused kernels, named `k0`, `k1`, ...
    pub(super) sources: Vec<KernelSource>,
    /// Fused step index -> its kernel in `sources`.
    pub(super) kernel_of: HashMap<usize, usize>,
    pub(super) gemms: HashMap<usize, GemmWork>,
}

/// A contraction: its cuBLAS calls, after copying operands cuBLAS cannot read in place
/// (operand 0 = A, 1 = B; the copy kernel in `sources`; the copy's length).
pub(super) struct GemmWork {
    pub(super) bp: BlasPlan,
    pub(super) copies: Vec<(usize, usize, usize)>,
    /// The kernel writing the output from the calls' permuted scratch, and its length.
    pub(super) unpermute: Option<(usize, usize)>,
}

/// The planner's plan for `cx`, its distinct fused kernels as CUDA sources and its
/// contractions as cuBLAS recipes.
pub(super) fn plan_kernels(planner: &Planner, cx: &Graph) -> Result<PlanKernels> {
    let plan = planner.plan(cx)?;
    // one function per distinct kernel: the 12 blocks of a ViT share theirs
    let mut sources: Vec<KernelSource> = vec![];
    let mut by_code: HashMap<String, usize> = HashMap::new();
    let mut add = |k: &FusedKernel| -> usize {
        let src = kernel_source(k, "dino_k");
        let next = sources.len();
        let j = *by_code.entry(src.code.clone()).or_insert(next);
        if j == next {
            let name = format!("k{j}");
            let code = src.code.replace("DINO_KERNEL dino_k(", &format!("DINO_KERNEL {name}("));
            sources.push(KernelSource { name, code, ..src });
        }
        j
    };
    let mut kernel_of: HashMap<usize, usize> = HashMap::new();
    let mut gemms = HashMap::new();
    let unsupported = |e: NeedsCopy| Error::Backend(format!("CUDA backend: no cuBLAS plan for a contraction ({e:?})"));
    for (i, s) in plan.steps.iter().enumerate() {
        match &s.work {
            Work::Fused(k) => {
                kernel_of.insert(i, add(k));
            }
            Work::Gemm(g) => {
                let gw = match BlasPlan::new(g) {
                    Ok(bp) => GemmWork { bp, copies: vec![], unpermute: None },
                    Err(_) => {
                        // copies of the inputs and/or a permuted scratch output (see `recipe`)
                        let op = cx
                            .graph
                            .node_weight(s.node)
                            .and_then(|o| o.as_any().downcast_ref::<GemmOp>())
                            .ok_or_else(|| Error::Backend("a GEMM step without its node".into()))?;
                        let la = Layout::of(&s.views[0], &cx.dyn_map)?;
                        let lb = Layout::of(&s.views[1], &cx.dyn_map)?;
                        let r = recipe(&op.axes, &la, &lb).map_err(unsupported)?;
                        let copies = r.copies.iter().map(|(o, k)| (*o, add(k), k.out_len())).collect();
                        let unpermute = r.unpermute.as_ref().map(|(k, len)| (add(k), *len));
                        GemmWork { bp: r.blas, copies, unpermute }
                    }
                };
                gemms.insert(i, gw);
            }
            // a device-to-device copy, then NCCL with its bucket (runtime.rs)
            Work::AllReduce(_) => {}
            Work::Other => {
                return Err(Error::Backend(format!(
                    "CUDA backend: no GPU kernel for {:?}",
                    cx.graph.node_weight(s.node).map(|o| format!("{o:?}"))
                )))
            }
            _ => {}
        }
    }
    Ok(PlanKernels { plan, sources, kernel_of, gemms })
}

/// The distinct CUDA kernels the runtime would compile for `cx` (compiled, not yet planned
/// for the GPU) at its current dynamic dims, and how many fused steps use them; needs no GPU
/// (NVRTC alone compiles them: `device::compile_ptx`).
pub fn distinct_kernels(cx: &Graph) -> Result<(Vec<KernelSource>, usize)> {
    let pk = plan_kernels(&Planner::new(cx), cx)?;
    Ok((pk.sources, pk.kernel_of.len()))
}
