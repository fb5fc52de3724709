//! The CPU executor of a compiled graph.
//!
//! luminal's `Graph::execute` looks every tensor up in a hash map, re-resolves every view and
//! allocates every output on each run. This executor plans once per set of dynamic dims: a
//! fixed schedule, kernels bound to concrete strides, and one arena in which every
//! intermediate has a precomputed offset ([`super::arena`]). Inputs are moved out of the
//! graph's tensor store for the run and back if kept; kept outputs are moved into it, so
//! weights are never copied.
use std::time::Instant;

use luminal::op::{Constant, ConstantValue, Function, InputTensor};
use luminal::prelude::petgraph::Direction;
use luminal::prelude::*;
use rustc_hash::FxHashMap;

use super::arena::{self, Interval};
use super::fused::FusedKernel;
use super::gemm::GemmPlan;
use crate::backend::fused::FusedOp;
use crate::backend::gemm::GemmOp;
use crate::backend::layout::Layout;
use crate::error::{Error, Result};

/// Where a node's output lives during a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Loc {
    /// The k-th input buffer, moved in from the graph's store.
    Input(usize),
    /// `len` floats at this arena offset.
    Arena(usize),
    /// The k-th kept output, a buffer of its own moved to the store after the run.
    Kept(usize),
}

pub(crate) enum Work {
    Input {
        name: String,
    },
    Value(f32),
    Fused(FusedKernel),
    Gemm(GemmPlan),
    /// Any other operator, run through luminal's `Operator::process`.
    Other,
}

pub(crate) struct Step {
    pub(crate) node: NodeIndex,
    pub(crate) work: Work,
    pub(crate) srcs: Vec<(usize, ShapeTracker)>, // (step index of the source, view)
    pub(crate) out_len: usize,
    pub(crate) loc: Loc,
}

/// Per-run statistics.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Arena size in bytes (all intermediates).
    pub arena_bytes: usize,
    /// Kernels run per execution.
    pub kernels: usize,
    /// The execution order chosen (the one with the smallest arena).
    pub order: &'static str,
    /// Seconds per kernel kind over the last profiled run (`DINO_DEBUG` >= 2).
    pub profile: Vec<(String, f64, usize)>,
    /// Seconds of each kernel of the last profiled run, with a description, slowest first.
    pub kernel_times: Vec<(String, f64)>,
}

pub(crate) struct Plan {
    pub(crate) dyn_dims: Vec<(char, usize)>,
    pub(crate) steps: Vec<Step>,
    pub(crate) arena_len: usize,
    pub(crate) n_inputs: usize,
    pub(crate) n_kept: usize,
    /// Per input step: the largest extent any view reads.
    pub(crate) input_extent: Vec<usize>,
    pub(crate) order_name: &'static str,
}

/// Runs a graph compiled by [`super::CpuCompiler`] on the CPU.
pub struct CpuRuntime {
    orders: Vec<(&'static str, Vec<NodeIndex>)>,
    plan: Option<Plan>,
    arena: Vec<f32>,
    stats: RunStats,
    profile: bool,
}

impl CpuRuntime {
    /// Prepare to run `cx` (after compilation; rebuild if the graph changes).
    pub fn new(cx: &Graph) -> CpuRuntime {
        let orders = super::schedule::candidates(cx);
        let profile = crate::debug::level() >= 2;
        CpuRuntime { orders, plan: None, arena: vec![], stats: RunStats::default(), profile }
    }

    /// Turn per-kernel profiling on or off.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on;
    }

    /// Statistics of the last run.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// Plan every candidate order and keep the one with the smallest arena.
    pub(crate) fn best_plan(&self, cx: &Graph) -> Result<Plan> {
        let mut best: Option<Plan> = None;
        for (name, order) in &self.orders {
            let p = Self::build_plan(cx, order, name)?;
            if crate::debug::level() >= 1 {
                eprintln!("[dino] order {name}: arena {:.1} MB", p.arena_len as f64 * 4e-6);
            }
            if best.as_ref().map(|b| p.arena_len < b.arena_len).unwrap_or(true) {
                best = Some(p);
            }
        }
        best.ok_or_else(|| Error::Backend("no execution order".into()))
    }

    fn build_plan(cx: &Graph, order: &[NodeIndex], order_name: &'static str) -> Result<Plan> {
        let dm = &cx.dyn_map;
        let mut step_of: FxHashMap<NodeIndex, usize> = FxHashMap::default();
        let mut steps: Vec<Step> = vec![];
        let (mut n_inputs, mut n_kept) = (0, 0);
        let mut input_extent = vec![];
        for &n in order {
            let op = cx.graph.node_weight(n).expect("node");
            let consumers =
                cx.graph.edges_directed(n, Direction::Outgoing).filter(|e| !e.weight().is_schedule()).count();
            let kept = cx.no_delete.contains(&n) || cx.to_retrieve.contains(&n);
            let any = op.as_any();
            if any.is::<Function>() && cx.get_sources(n).is_empty() {
                if consumers == 0 {
                    continue;
                }
                step_of.insert(n, steps.len());
                steps.push(Step {
                    node: n,
                    work: Work::Input { name: format!("{op:?}") },
                    srcs: vec![],
                    out_len: 0,
                    loc: Loc::Input(n_inputs),
                });
                n_inputs += 1;
                input_extent.push(0);
                continue;
            }
            if consumers == 0 && !kept {
                continue; // nothing reads it
            }
            let srcs: Vec<(usize, ShapeTracker)> = cx
                .get_sources(n)
                .into_iter()
                .map(|(s, _, st)| {
                    step_of
                        .get(&s)
                        .map(|&i| (i, st))
                        .ok_or_else(|| Error::Backend(format!("{op:?} reads a node with no value")))
                })
                .collect::<Result<_>>()?;
            let layouts: Vec<Layout> = srcs.iter().map(|(_, st)| Layout::of(st, dm)).collect::<Result<_>>()?;
            // every view must stay inside its buffer
            for ((si, _), l) in srcs.iter().zip(&layouts) {
                let ext = l.extent();
                match steps[*si].loc {
                    Loc::Input(k) => input_extent[k] = input_extent[k].max(ext),
                    _ if ext > steps[*si].out_len => {
                        return Err(Error::Backend(format!(
                            "{op:?} reads {ext} elements of a {}-element buffer",
                            steps[*si].out_len
                        )))
                    }
                    _ => {}
                }
            }
            let (work, out_len) = if let Some(f) = any.downcast_ref::<FusedOp>() {
                let k = FusedKernel::new(f, &f.resolve_dims(dm)?, &layouts);
                let len = k.out_len();
                (Work::Fused(k), len)
            } else if let Some(g) = any.downcast_ref::<GemmOp>() {
                let p = GemmPlan::new(&g.axes, &layouts[0], &layouts[1]);
                let len = p.out_len();
                (Work::Gemm(p), len)
            } else if let Some(Constant(v, _)) = any.downcast_ref::<Constant>() {
                let v = match v {
                    ConstantValue::Float(f) => *f,
                    ConstantValue::Expression(e) => e
                        .exec(dm)
                        .ok_or_else(|| Error::Backend(format!("constant {e:?} needs an unset dynamic dim")))?
                        as f32,
                };
                (Work::Value(v), 1)
            } else {
                let len = srcs.first().map(|(_, st)| st.n_elements().exec(dm).unwrap_or(0)).unwrap_or(1);
                (Work::Other, len)
            };
            let loc = if kept {
                n_kept += 1;
                Loc::Kept(n_kept - 1)
            } else {
                Loc::Arena(0)
            };
            step_of.insert(n, steps.len());
            steps.push(Step { node: n, work, srcs, out_len, loc });
        }
        // lifetimes of arena buffers: from definition to last read
        let mut last = (0..steps.len()).collect::<Vec<_>>();
        for (i, s) in steps.iter().enumerate() {
            for (si, _) in &s.srcs {
                last[*si] = last[*si].max(i);
            }
        }
        let arena_steps: Vec<usize> = (0..steps.len()).filter(|&i| steps[i].loc == Loc::Arena(0)).collect();
        let intervals: Vec<Interval> =
            arena_steps.iter().map(|&i| Interval { len: steps[i].out_len.max(1), first: i, last: last[i] }).collect();
        let (offsets, arena_len) = arena::plan(&intervals);
        for (&i, off) in arena_steps.iter().zip(offsets) {
            steps[i].loc = Loc::Arena(off);
        }
        let mut dyn_dims: Vec<(char, usize)> = dm.iter().map(|(k, v)| (*k, *v)).collect();
        dyn_dims.sort();
        Ok(Plan { dyn_dims, steps, arena_len, n_inputs, n_kept, input_extent, order_name })
    }

    /// Plan for the current dynamic dims without running or allocating (the arena size lands
    /// in `stats`).
    pub fn plan(&mut self, cx: &Graph) -> Result<()> {
        let plan = self.best_plan(cx)?;
        self.stats.arena_bytes = plan.arena_len * 4;
        self.stats.order = plan.order_name;
        self.stats.kernels = plan.steps.iter().filter(|s| !matches!(s.work, Work::Input { .. })).count();
        Ok(())
    }

    /// Run the graph once: reads the inputs set in `cx`, leaves kept outputs in it.
    pub fn execute(&mut self, cx: &mut Graph) -> Result<()> {
        let mut dyn_dims: Vec<(char, usize)> = cx.dyn_map.iter().map(|(k, v)| (*k, *v)).collect();
        dyn_dims.sort();
        if self.plan.as_ref().map(|p| p.dyn_dims != dyn_dims).unwrap_or(true) {
            let plan = self.best_plan(cx)?;
            self.stats.order = plan.order_name;
            if crate::debug::level() >= 1 {
                let kernels = plan.steps.iter().filter(|s| !matches!(s.work, Work::Input { .. })).count();
                eprintln!(
                    "[dino] plan: {kernels} kernels, arena {:.1} MB, order {}",
                    plan.arena_len as f64 * 4e-6,
                    plan.order_name
                );
            }
            if crate::debug::level() >= 3 {
                for s in &plan.steps {
                    if let Some(f) = cx.graph.node_weight(s.node).and_then(|o| o.as_any().downcast_ref::<FusedOp>()) {
                        eprintln!("[dino] {} {:?} reduce {:?}", describe(cx, s), f.dims, f.reduce);
                        for (k, st) in f.stages.iter().enumerate() {
                            eprint!("  stage {k} ({:?}):\n{}", st.kind, st.program);
                        }
                        eprint!("{}", f.program);
                    }
                }
            }
            self.arena = vec![0.0; plan.arena_len];
            self.stats.arena_bytes = plan.arena_len * 4;
            self.stats.kernels = plan.steps.iter().filter(|s| !matches!(s.work, Work::Input { .. })).count();
            self.plan = Some(plan);
        }
        let plan = self.plan.as_mut().expect("planned");
        let mut inputs: Vec<Vec<f32>> = Vec::with_capacity(plan.n_inputs);
        let mut failure = None;
        for s in &plan.steps {
            if let Work::Input { name } = &s.work {
                let Some(mut t) = cx.tensors.remove(&(s.node, 0)) else {
                    failure = Some(Error::MissingInput { name: name.clone() });
                    break;
                };
                let need = plan.input_extent[inputs.len()];
                match t.data.as_any_mut().downcast_mut::<Vec<f32>>() {
                    Some(v) if v.len() >= need => inputs.push(std::mem::take(v)),
                    Some(v) => {
                        let got = v.len();
                        cx.tensors.insert((s.node, 0), t);
                        failure = Some(Error::WrongSize {
                            name: name.clone(),
                            shape: "the graph's views of it".into(),
                            expected: need,
                            got,
                        });
                        break;
                    }
                    None => {
                        cx.tensors.insert((s.node, 0), t);
                        failure = Some(Error::Backend(format!("input `{name}` does not hold f32 data on the CPU")));
                        break;
                    }
                }
            }
        }
        if let Some(e) = failure {
            // give back what was taken: a failed run loses no data
            let taken = plan.steps.iter().filter(|s| matches!(s.work, Work::Input { .. })).map(|s| s.node);
            for (node, v) in taken.zip(inputs) {
                cx.tensors.insert((node, 0), Tensor::new(v));
            }
            return Err(e);
        }
        let mut kept: Vec<Vec<f32>> = vec![vec![]; plan.n_kept];
        let mut prof: FxHashMap<&'static str, (f64, usize)> = FxHashMap::default();
        let mut kernel_times: Vec<(String, f64)> = vec![];
        let arena = self.arena.as_mut_ptr();
        for i in 0..plan.steps.len() {
            let s = &plan.steps[i];
            if matches!(s.work, Work::Input { .. }) {
                continue;
            }
            let srcs: Vec<&[f32]> = s
                .srcs
                .iter()
                .map(|(si, _)| {
                    let src = &plan.steps[*si];
                    match src.loc {
                        Loc::Input(k) => &inputs[k][..],
                        Loc::Kept(k) => &kept[k][..],
                        // SAFETY: arena buffers alive at the same step never overlap (arena.rs),
                        // so this slice is disjoint from the output slice below.
                        Loc::Arena(off) => unsafe { std::slice::from_raw_parts(arena.add(off), src.out_len.max(1)) },
                    }
                })
                .collect();
            let mut own = Vec::new();
            let out: &mut [f32] = match s.loc {
                Loc::Arena(off) => unsafe { std::slice::from_raw_parts_mut(arena.add(off), s.out_len.max(1)) },
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
                Work::Gemm(g) => {
                    g.run(srcs[0], srcs[1], out);
                    "gemm"
                }
                Work::Value(v) => {
                    out[0] = *v;
                    "constant"
                }
                Work::Other => {
                    let op = cx.graph.node_weight_mut(s.node).expect("node");
                    let tensors: Vec<Tensor> = srcs.iter().map(|b| Tensor::new(b.to_vec())).collect();
                    let ins = tensors.iter().zip(&s.srcs).map(|(t, (_, st))| (InputTensor::Borrowed(t), *st)).collect();
                    let res = op.process(ins);
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
                let dt = t0.elapsed().as_secs_f64();
                let e = prof.entry(kind).or_default();
                e.0 += dt;
                e.1 += 1;
                kernel_times.push((describe(cx, s), dt));
            }
            if let Loc::Kept(k) = s.loc {
                kept[k] = own;
            }
        }
        // hand back kept inputs, hand over kept outputs
        let mut inputs = inputs.into_iter();
        for s in &plan.steps {
            match s.loc {
                Loc::Input(_) => {
                    let v = inputs.next().expect("one buffer per input");
                    if cx.no_delete.contains(&s.node) {
                        cx.tensors.insert((s.node, 0), Tensor::new(v));
                    }
                }
                Loc::Kept(k) => {
                    cx.tensors.insert((s.node, 0), Tensor::new(std::mem::take(&mut kept[k])));
                }
                Loc::Arena(_) => {}
            }
        }
        if self.profile {
            let mut p: Vec<(String, f64, usize)> = prof.into_iter().map(|(k, (t, c))| (k.to_string(), t, c)).collect();
            p.sort_by(|a, b| b.1.total_cmp(&a.1));
            self.stats.profile = p;
            kernel_times.sort_by(|a, b| b.1.total_cmp(&a.1));
            self.stats.kernel_times = kernel_times;
        }
        Ok(())
    }
}

/// A one-line description of a step for profiles.
fn describe(cx: &Graph, s: &Step) -> String {
    let op = cx.graph.node_weight(s.node).map(|o| format!("{o:?}")).unwrap_or_default();
    match &s.work {
        Work::Fused(k) => format!("{op} {}", k.shape_summary()),
        Work::Gemm(g) => format!("Gemm {}", g.shape_summary()),
        _ => op,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuCompiler;
    use crate::graph::{data, Handles};
    use crate::testing::Rng;

    /// `y = sin(x W)` with a dynamic batch.
    fn graph() -> (Box<Graph>, NodeIndex, NodeIndex, Handles) {
        let mut cx = Box::new(Graph::new());
        let x = cx.named_tensor::<(Dyn<'b'>, Const<3>)>("x");
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
            cx.set_dyn_dim('b', b);
            reference.set_dyn_dim('b', b);
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

    #[test]
    fn missing_or_short_input_is_an_error_and_loses_nothing() {
        let (mut cx, x, w, mut h) = graph();
        cx.compile(<CpuCompiler>::default(), &mut h);
        cx.set_dyn_dim('b', 2);
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
