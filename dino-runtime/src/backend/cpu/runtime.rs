//! The CPU executor of a [`Plan`].
//!
//! luminal's `Graph::execute` looks every tensor up in a hash map, re-resolves every view and
//! allocates every output on each run. This executor runs the plan made once per set of
//! dynamic dims: a fixed schedule, kernels bound to concrete strides, and one arena in which
//! every intermediate has a precomputed offset. Inputs are moved out of the graph's tensor
//! store for the run and back if kept; kept outputs are moved into it, so weights are never
//! copied.
use std::sync::Arc;
use std::time::Instant;

use luminal::op::InputTensor;
use luminal::prelude::*;
use rustc_hash::FxHashMap;

use crate::autograd::Prim;
use crate::backend::executor::{Executor, ProfileEntry, RunStats};
use crate::backend::layout::Layout;
use crate::backend::plan::precision::round_bf16_slice;
use crate::backend::plan::{DType, Loc, Plan, PlanOptions, Planner, Policy, Step, Storage, Work};
use crate::dist::Collective;
use crate::error::{Error, Result};

use super::collective;

/// Runs a graph compiled by [`crate::backend::Passes`] on the CPU.
pub struct CpuRuntime {
    /// Plans anew when the dynamic dims change; none for a plan loaded from an artifact,
    /// which runs at its own dims only.
    planner: Option<Planner>,
    plan: Option<Plan>,
    arena: Vec<f32>,
    stats: RunStats,
    /// Per-kernel timing: `DINO_DEBUG` >= 2, or [`Executor::start_profile`].
    profile: bool,
    /// Each kernel of the profiled runs (`gemm Gemm 1x[...]`, `fused FusedOp ...`): calls,
    /// seconds.
    kernel_times: FxHashMap<String, (usize, f64)>,
    /// The ranks the plan's all-reduce steps sum over (a data-parallel run).
    group: Option<Arc<dyn Collective>>,
}

impl CpuRuntime {
    /// Prepare to run `cx` (after compilation; rebuild if the graph changes) in fp32.
    pub fn new(cx: &Graph) -> CpuRuntime {
        CpuRuntime::with_policy(cx, Policy::default())
    }

    /// [`CpuRuntime::new`] with a precision policy: every buffer is held as f32, and those the
    /// policy makes bf16 are rounded to bf16 when stored (an emulation: the numerics of a
    /// bf16 plan, at fp32's speed or a little below).
    pub fn with_policy(cx: &Graph, policy: Policy) -> CpuRuntime {
        let profile = crate::debug::level() >= 2;
        CpuRuntime {
            planner: Some(Planner::with_options(cx, PlanOptions { policy, storage: Storage::F32 })),
            plan: None,
            arena: vec![],
            stats: RunStats::default(),
            profile,
            kernel_times: FxHashMap::default(),
            group: None,
        }
    }

    /// Run a plan made elsewhere (an artifact's, validated by [`Plan::from_bytes`]): no graph
    /// is compiled or planned, and only graphs at the plan's dynamic dims run.
    pub fn from_plan(plan: Plan) -> CpuRuntime {
        let mut rt = CpuRuntime {
            planner: None,
            arena: vec![0.0; plan.arena_bytes.div_ceil(DType::F32.size())],
            plan: None,
            stats: RunStats::default(),
            profile: crate::debug::level() >= 2,
            kernel_times: FxHashMap::default(),
            group: None,
        };
        rt.note(&plan);
        rt.plan = Some(plan);
        rt
    }

    /// A plan for the current dynamic dims of `cx`.
    fn new_plan(&self, cx: &Graph) -> Result<Plan> {
        match (&self.planner, &self.plan) {
            (Some(planner), _) => planner.plan(cx),
            (None, Some(p)) => Err(p.other_dims(cx)),
            (None, None) => Err(Error::Backend("an executor without a plan".into())),
        }
    }

    /// Statistics of the last plan.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// Run a luminal primitive no pass replaced on resolved layouts ([`super::primitive`]);
    /// false when it is not one (the caller then runs luminal's own operator).
    fn primitive(&self, cx: &Graph, s: &Step, srcs: &[&[f32]], out: &mut [f32]) -> bool {
        let Some(prim) = cx.graph.node_weight(s.node).and_then(|op| Prim::of(op.as_ref())) else { return false };
        if s.views.len() != s.srcs.len() {
            return false;
        }
        let layouts: Option<Vec<Layout>> = s.views.iter().map(|st| Layout::of(st, &cx.dyn_map).ok()).collect();
        match layouts {
            Some(layouts) => super::primitive::eval(prim, srcs, &layouts, out),
            None => false,
        }
    }

    fn note(&mut self, plan: &Plan) {
        self.stats =
            RunStats { arena_bytes: plan.arena_bytes, kernels: plan.kernels(), launches: None, order: plan.order_name };
    }

    /// Plan for the current dynamic dims without running or allocating (the arena size lands
    /// in `stats`).
    pub fn plan(&mut self, cx: &Graph) -> Result<()> {
        if self.planner.is_none() && self.plan.as_ref().is_some_and(|p| p.is_for(cx)) {
            return Ok(());
        }
        let plan = self.new_plan(cx)?;
        self.note(&plan);
        Ok(())
    }

    /// Run the graph once: reads the inputs set in `cx`, leaves kept outputs in it.
    pub fn execute(&mut self, cx: &mut Graph) -> Result<()> {
        if !self.plan.as_ref().is_some_and(|p| p.is_for(cx)) {
            let plan = self.new_plan(cx)?;
            self.arena = vec![0.0; plan.arena_bytes / DType::F32.size()];
            self.note(&plan);
            self.plan = Some(plan);
        }
        let plan = self.plan.take().expect("planned");
        let r = self.run(cx, &plan);
        self.plan = Some(plan);
        r
    }

    fn run(&mut self, cx: &mut Graph, plan: &Plan) -> Result<()> {
        if plan.storage != Storage::F32 && !plan.is_fp32() {
            return Err(Error::Backend(
                "this plan stores bf16 buffers at 2 bytes (a GPU's plan); the CPU runs plans laid out with f32 storage"
                    .into(),
            ));
        }
        plan.check_inputs(cx, "f32 data on the CPU", |a| a.downcast_ref::<Vec<f32>>().map(Vec::len))?;
        let inputs: Vec<Vec<f32>> = plan
            .inputs()
            .map(|(s, _)| {
                let mut t = cx.tensors.remove(&(s.node, 0)).expect("checked");
                std::mem::take(t.data.as_any_mut().downcast_mut::<Vec<f32>>().expect("checked"))
            })
            .collect();
        if !plan.buckets.is_empty() && self.group.is_none() {
            plan.hand_back_inputs(cx, inputs);
            return Err(Error::Backend(format!(
                "this step sums {} buffers over the ranks of a data-parallel run, and the executor has no process \
                 group (Executor::set_collective)",
                plan.buckets.iter().map(|b| b.members.len()).sum::<usize>()
            )));
        }
        let mut kept: Vec<Vec<f32>> = vec![vec![]; plan.n_kept];
        let arena = self.arena.as_mut_ptr();
        let floats = |bytes: usize| bytes / DType::F32.size();
        let mut next_bucket = 0;
        for i in 0..plan.steps.len() {
            while plan.buckets.get(next_bucket).is_some_and(|b| b.flush_before == i) {
                if let Err(e) = self.flush(plan, next_bucket, &mut kept) {
                    plan.hand_back_inputs(cx, inputs);
                    return Err(e);
                }
                next_bucket += 1;
            }
            let s = &plan.steps[i];
            if matches!(s.work, Work::Input { .. }) {
                continue;
            }
            let srcs: Vec<&[f32]> = s
                .srcs
                .iter()
                .map(|si| {
                    let src = &plan.steps[*si];
                    match src.loc {
                        Loc::Input(k) => &inputs[k][..],
                        Loc::Kept(k) => &kept[k][..],
                        // SAFETY: arena buffers alive at the same step never overlap (arena.rs),
                        // so this slice is disjoint from the output slice below.
                        Loc::Arena(off) => unsafe {
                            std::slice::from_raw_parts(arena.add(floats(off)), src.out_len.max(1))
                        },
                    }
                })
                .collect();
            let mut own = Vec::new();
            let out: &mut [f32] = match s.loc {
                // SAFETY: as above; the arena holds `arena_bytes`, every buffer inside it.
                Loc::Arena(off) => unsafe { std::slice::from_raw_parts_mut(arena.add(floats(off)), s.out_len.max(1)) },
                _ => {
                    own = vec![0f32; s.out_len.max(1)];
                    &mut own[..]
                }
            };
            let t0 = self.profile.then(Instant::now);
            let kind = match &s.work {
                Work::Fused(k) => {
                    k.run(&srcs, out);
                    "fused"
                }
                Work::Gemm(g) if g.operands == DType::Bf16 => {
                    // bf16 operands: f32 sources (weights, f32 activations) rounded as a bf16
                    // copy of them would be; bf16 sources already are
                    let (a, b) =
                        (bf16_view(&plan.steps[s.srcs[0]], srcs[0]), bf16_view(&plan.steps[s.srcs[1]], srcs[1]));
                    g.run(&a, &b, out);
                    "gemm"
                }
                Work::Gemm(g) => {
                    g.run(srcs[0], srcs[1], out);
                    "gemm"
                }
                Work::Value(v) => {
                    out[0] = *v;
                    "constant"
                }
                Work::AllReduce(_) => {
                    // this rank's part; its bucket sums it over the ranks before it is read
                    out.copy_from_slice(&srcs[0][..out.len()]);
                    "allreduce-copy"
                }
                Work::Other if self.primitive(cx, s, &srcs, out) => "primitive",
                Work::Other => {
                    let tensors: Vec<Tensor> = srcs.iter().map(|b| Tensor::new(b.to_vec())).collect();
                    // luminal's operators expect views with the dynamic dims substituted, as
                    // its executor gives them
                    let dyn_map = &cx.dyn_map;
                    let ins = tensors
                        .iter()
                        .zip(&s.views)
                        .map(|(t, st)| {
                            let mut st = *st;
                            st.resolve_global_dyn_dims(dyn_map);
                            (InputTensor::Borrowed(t), st)
                        })
                        .collect();
                    let res = cx.graph.node_weight_mut(s.node).expect("node").process(ins);
                    let v = res
                        .first()
                        .and_then(|t| t.data.as_any().downcast_ref::<Vec<f32>>())
                        .cloned()
                        .unwrap_or_default();
                    let n = v.len().min(out.len());
                    out[..n].copy_from_slice(&v[..n]);
                    "other"
                }
                Work::Input { .. } => unreachable!(),
            };
            if let Some(t0) = t0 {
                let e = self.kernel_times.entry(format!("{kind} {}", plan.describe(cx, i))).or_default();
                e.0 += 1;
                e.1 += t0.elapsed().as_secs_f64();
            }
            if s.dtype == DType::Bf16 {
                round_bf16_slice(out);
            }
            if let Loc::Kept(k) = s.loc {
                kept[k] = own;
            }
        }
        while next_bucket < plan.buckets.len() {
            if let Err(e) = self.flush(plan, next_bucket, &mut kept) {
                plan.hand_back_inputs(cx, inputs);
                return Err(e);
            }
            next_bucket += 1;
        }
        plan.hand_back(cx, inputs, kept, drop);
        Ok(())
    }

    /// Sum bucket `b`'s buffers over the ranks ([`collective::reduce_bucket`]), timed when
    /// profiling.
    fn flush(&mut self, plan: &Plan, b: usize, kept: &mut [Vec<f32>]) -> Result<()> {
        let group = self.group.as_deref().expect("checked before the run");
        let t0 = self.profile.then(Instant::now);
        collective::reduce_bucket(group, plan, b, &mut self.arena, kept)?;
        if let Some(t0) = t0 {
            let bucket = &plan.buckets[b];
            let e = self
                .kernel_times
                .entry(format!(
                    "allreduce bucket {} ({} tensors, {} elements)",
                    b,
                    bucket.members.len(),
                    bucket.elements
                ))
                .or_default();
            e.0 += 1;
            e.1 += t0.elapsed().as_secs_f64();
        }
        Ok(())
    }
}

/// A contraction's operand as bf16: `buf` itself if its step stores bf16 (already rounded), a
/// rounded copy otherwise.
fn bf16_view<'a>(src: &Step, buf: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
    if src.dtype == DType::Bf16 {
        std::borrow::Cow::Borrowed(buf)
    } else {
        let mut v = buf.to_vec();
        round_bf16_slice(&mut v);
        std::borrow::Cow::Owned(v)
    }
}

/// `b=3, g=6` (the dims a plan was made for).
impl Executor for CpuRuntime {
    fn describe(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn plan(&mut self, cx: &Graph) -> Result<()> {
        CpuRuntime::plan(self, cx)
    }

    fn execute(&mut self, cx: &mut Graph) -> Result<()> {
        CpuRuntime::execute(self, cx)
    }

    /// Everything is on the host already: only checks that the tensors are there.
    fn to_host(&mut self, cx: &mut Graph, nodes: &[NodeIndex]) -> Result<()> {
        match nodes.iter().find(|n| !cx.tensors.contains_key(&(**n, 0))) {
            Some(n) => Err(Error::Backend(format!("no value for node {n:?} (was the graph executed?)"))),
            None => Ok(()),
        }
    }

    fn all_to_host(&mut self, _: &mut Graph) -> Result<()> {
        Ok(())
    }

    fn set_collective(&mut self, group: Arc<dyn Collective>) -> Result<()> {
        self.group = Some(group);
        Ok(())
    }

    fn stats(&self) -> RunStats {
        self.stats.clone()
    }

    fn start_profile(&mut self) {
        self.profile = true;
        self.kernel_times.clear();
    }

    fn take_profile(&mut self) -> Vec<ProfileEntry> {
        self.profile = crate::debug::level() >= 2;
        let mut v: Vec<ProfileEntry> =
            self.kernel_times.drain().map(|(what, (calls, seconds))| ProfileEntry { what, calls, seconds }).collect();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuCompiler;
    use crate::graph::dims;
    use crate::graph::{data, Handles};
    use crate::testing::Rng;

    /// `y = sin(x W)` with a dynamic batch.
    fn graph() -> (Box<Graph>, NodeIndex, NodeIndex, Handles) {
        let mut cx = Box::new(Graph::new());
        let x = cx.named_tensor::<(dims::Batch, Const<3>)>("x");
        let w = cx.named_tensor::<R2<3, 4>>("w");
        let y = x.matmul(w).sin();
        cx.no_delete.insert(y.id);
        (cx, x.id, w.id, Handles(vec![y.id]))
    }

    #[test]
    fn one_compiled_graph_runs_at_several_batch_sizes() {
        let (mut cx, x, w, mut h) = graph();
        let (mut reference, rx, rw, rh) = graph();
        cx.compile(<CpuCompiler>::default(), &mut h);
        let mut rt = CpuRuntime::new(&cx);
        let mut rng = Rng::new(3);
        let wv = rng.uniform(12, 1.0);
        for (g, id) in [(&mut cx, w), (&mut reference, rw)] {
            data::set(g, id, wv.clone());
            g.no_delete.insert(id);
        }
        for b in [2usize, 5, 1] {
            let xv = rng.uniform(b * 3, 1.0);
            cx.set_dyn_dim(dims::BATCH, b);
            reference.set_dyn_dim(dims::BATCH, b);
            data::set(&mut cx, x, xv.clone());
            data::set(&mut reference, rx, xv);
            rt.execute(&mut cx).unwrap();
            reference.execute();
            let got = data::take(&mut cx, h.0[0]).unwrap();
            let want = data::take(&mut reference, rh.0[0]).unwrap();
            assert_eq!(got.len(), b * 4);
            for (g, r) in got.iter().zip(&want) {
                assert!((g - r).abs() < 1e-6, "batch {b}: {g} vs {r}");
            }
        }
    }

    /// A plan through bytes ([`Plan::to_bytes`], [`Plan::from_bytes`]) runs to the same
    /// numbers with no graph compiled, at its own dims only.
    #[test]
    fn a_plan_from_bytes_runs_to_the_same_numbers() {
        let (mut cx, x, w, mut h) = graph();
        cx.compile(<CpuCompiler>::default(), &mut h);
        cx.set_dyn_dim(dims::BATCH, 3);
        let bytes = Planner::new(&cx).plan(&cx).unwrap().to_bytes(|_| String::new()).unwrap();
        let mut loaded = CpuRuntime::from_plan(Plan::from_bytes(&bytes).unwrap());
        let mut live = CpuRuntime::new(&cx);
        data::set(&mut cx, w, Rng::new(1).uniform(12, 1.0));
        cx.no_delete.insert(w);
        let mut outputs = vec![];
        for rt in [&mut live, &mut loaded] {
            data::set(&mut cx, x, Rng::new(2).uniform(9, 1.0));
            rt.execute(&mut cx).unwrap();
            outputs.push(data::take(&mut cx, h.0[0]).unwrap());
        }
        assert_eq!(outputs[0], outputs[1]);
        cx.set_dyn_dim(dims::BATCH, 4);
        data::set(&mut cx, x, vec![0.0; 12]);
        let e = loaded.execute(&mut cx).unwrap_err().to_string();
        assert!(e.contains("b=3") && e.contains("b=4"), "{e}");
    }

    #[test]
    fn missing_or_short_input_is_an_error_and_loses_nothing() {
        let (mut cx, x, w, mut h) = graph();
        cx.compile(<CpuCompiler>::default(), &mut h);
        cx.set_dyn_dim(dims::BATCH, 2);
        let mut rt = CpuRuntime::new(&cx);
        data::set(&mut cx, w, vec![0.5; 12]);
        cx.no_delete.insert(w);
        let e = rt.execute(&mut cx).unwrap_err().to_string();
        assert!(e.contains("input `x Load` has no value"), "{e}");
        assert_eq!(data::get(&cx, w).map(|v| v.len()), Some(12), "the weight is still there");
        data::set(&mut cx, x, vec![1.0; 5]); // 2 x 3 needed
        let e = rt.execute(&mut cx).unwrap_err().to_string();
        assert!(e.contains("expected 6 elements") && e.contains("got 5"), "{e}");
        assert_eq!(data::get(&cx, x).map(|v| v.len()), Some(5), "the short input is given back");
        assert_eq!(data::get(&cx, w).map(|v| v.len()), Some(12));
    }
}
