//! From a compiled graph's device-neutral [`Plan`] to what the GPU runs: its distinct fused
//! kernels printed as CUDA C (the blocks of a ViT share theirs), and each contraction's cuBLAS
//! recipe. Needs no GPU.
use std::collections::{BTreeMap, HashMap};

use luminal::prelude::*;

use super::blas::{recipe, BlasPlan, GemmRecipe, NeedsCopy};
use super::codegen::{kernel_source, KernelSource};
use crate::backend::gemm::GemmOp;
use crate::backend::layout::Layout;
use crate::backend::plan::{FusedKernel, Plan, Planner, Work};
use crate::error::{Error, Result};

/// What the GPU runs for a plan, before any device is touched.
pub(super) struct PlanKernels {
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

/// The recipes of the contractions cuBLAS cannot run in place, by step (input copies, or a
/// permuted output put back in order). They read the graph's views, which a plan loaded from
/// an artifact does not have: a CUDA artifact stores them.
pub(super) fn gemm_recipes(plan: &Plan, cx: &Graph) -> Result<BTreeMap<usize, GemmRecipe>> {
    let unsupported = |e: NeedsCopy| Error::Backend(format!("CUDA backend: no cuBLAS plan for a contraction ({e:?})"));
    let mut recipes = BTreeMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        match &s.work {
            Work::Gemm(g) if BlasPlan::new(g).is_err() => {
                let op = cx
                    .graph
                    .node_weight(s.node)
                    .and_then(|o| o.as_any().downcast_ref::<GemmOp>())
                    .ok_or_else(|| Error::Backend("a GEMM step without its node".into()))?;
                let la = Layout::of(&s.views[0], &cx.dyn_map)?;
                let lb = Layout::of(&s.views[1], &cx.dyn_map)?;
                recipes.insert(i, recipe(&op.axes, &la, &lb).map_err(unsupported)?);
            }
            Work::Other => {
                return Err(Error::Backend(format!(
                    "CUDA backend: no GPU kernel for {:?}",
                    cx.graph.node_weight(s.node).map(|o| format!("{o:?}"))
                )))
            }
            _ => {}
        }
    }
    Ok(recipes)
}

/// A plan's distinct fused kernels as CUDA sources and its contractions as cuBLAS calls,
/// with `recipes` ([`gemm_recipes`]) for those that cannot run in place. Needs no graph: the
/// same plan and recipes give the same kernels, in the same order, with the same names.
pub(super) fn plan_kernels(plan: &Plan, recipes: &BTreeMap<usize, GemmRecipe>) -> Result<PlanKernels> {
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
    for (i, s) in plan.steps.iter().enumerate() {
        match &s.work {
            Work::Fused(k) => {
                kernel_of.insert(i, add(k));
            }
            Work::Gemm(g) => {
                let gw = match (BlasPlan::new(g), recipes.get(&i)) {
                    (Ok(bp), _) => GemmWork { bp, copies: vec![], unpermute: None },
                    (Err(_), Some(r)) => {
                        let copies = r.copies.iter().map(|(o, k)| (*o, add(k), k.out_len())).collect();
                        let unpermute = r.unpermute.as_ref().map(|(k, len)| (add(k), *len));
                        GemmWork { bp: r.blas.clone(), copies, unpermute }
                    }
                    (Err(e), None) => {
                        return Err(Error::Backend(format!(
                            "CUDA backend: step {i}, a contraction cuBLAS cannot read in place ({e:?}), has no recipe"
                        )))
                    }
                };
                gemms.insert(i, gw);
            }
            // a device-to-device copy, then NCCL with its bucket (runtime.rs)
            Work::AllReduce(_) => {}
            Work::Other => {
                return Err(Error::Backend(format!(
                    "CUDA backend: no GPU kernel for step {i} (node {})",
                    s.node.index()
                )))
            }
            _ => {}
        }
    }
    Ok(PlanKernels { sources, kernel_of, gemms })
}

/// The distinct CUDA kernels the runtime would compile for `cx` (compiled, not yet planned
/// for the GPU) at its current dynamic dims, and how many fused steps use them; needs no GPU
/// (NVRTC alone compiles them: `device::compile_ptx`).
pub fn distinct_kernels(cx: &Graph) -> Result<(Vec<KernelSource>, usize)> {
    let plan = Planner::new(cx).plan(cx)?;
    let pk = plan_kernels(&plan, &gemm_recipes(&plan, cx)?)?;
    Ok((pk.sources, pk.kernel_of.len()))
}
