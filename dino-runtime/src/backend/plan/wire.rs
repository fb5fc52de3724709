//! A plan as bytes: what a compiled artifact stores, and the checks that make a plan read
//! from a file safe to run.
//!
//! ```text
//!   Plan ──to_bytes──► bincode(WirePlan) ──(a file, a network, a stranger)──► from_bytes
//!                        steps without views:                        │ decode (size-limited)
//!                        kernels, contractions,                      │ validate: every index,
//!                        buffers and their places                    │ every address a kernel or
//!                                                                    ▼ product can touch
//!                                                                  Plan (views empty)
//! ```
//!
//! The executors index buffers without bounds checks (`cpu/eval.rs`, the `gemm` crate, CUDA
//! kernels), trusting the planner. A plan from a file was not made by this planner, so
//! [`Plan::from_bytes`] proves, before anything runs, that every source index precedes its
//! step, every arena buffer lies inside the arena, and every element a fused kernel loads or
//! stores and every element a contraction reads or writes lies inside its buffer, with outputs
//! written once each. A plan that fails is refused with the step and the reason.
use luminal::prelude::NodeIndex;
use serde::{Deserialize, Serialize};

use super::build::{DType, DynDims, Loc, Plan, Step, Work};
use super::contraction::{Ax, GemmPlan};
use super::kernel::FusedKernel;
use super::precision::Storage;
use super::schedule::ORDER_NAMES;
use crate::backend::ir::{Instr, Program};

/// The largest plan a file may hold (bytes of the encoding).
const MAX_PLAN_BYTES: u64 = 1 << 31;

#[derive(Serialize, Deserialize)]
struct WireStep {
    node: u32,
    work: Work,
    srcs: Vec<usize>,
    out_len: usize,
    dtype: DType,
    loc: Loc,
}

#[derive(Serialize, Deserialize)]
struct WirePlan {
    dyn_dims: DynDims,
    steps: Vec<WireStep>,
    arena_bytes: usize,
    n_inputs: usize,
    n_kept: usize,
    input_extent: Vec<usize>,
    order_name: String,
    storage: Storage,
}

/// The encoding; decoding claims at most `limit` bytes (no length prefix in a file can make
/// it allocate more than the file holds).
fn options(limit: u64) -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding().with_limit(limit)
}

impl Plan {
    /// The plan as bytes. Steps that only the graph can run ([`Work::Other`]: a luminal
    /// operator no pass replaced) have no portable form: `Err` lists them (`what` names each
    /// step, e.g. by its graph operator).
    pub fn to_bytes(&self, what: impl Fn(&Step) -> String) -> Result<Vec<u8>, String> {
        let other: Vec<String> = self.steps.iter().filter(|s| matches!(s.work, Work::Other)).map(what).collect();
        if !other.is_empty() {
            return Err(format!(
                "{} step(s) run luminal operators that no pass replaced, which only a graph can run: {}",
                other.len(),
                other.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let steps = self
            .steps
            .iter()
            .map(|s| WireStep {
                node: s.node.index() as u32,
                work: match &s.work {
                    Work::Input { name } => Work::Input { name: name.clone() },
                    Work::Value(v) => Work::Value(*v),
                    Work::Fused(k) => Work::Fused(k.clone()),
                    Work::Gemm(g) => Work::Gemm(g.clone()),
                    Work::AllReduce(r) => Work::AllReduce(r.clone()),
                    Work::Other => unreachable!("refused above"),
                },
                srcs: s.srcs.clone(),
                out_len: s.out_len,
                dtype: s.dtype,
                loc: s.loc,
            })
            .collect();
        let w = WirePlan {
            dyn_dims: self.dyn_dims.clone(),
            steps,
            arena_bytes: self.arena_bytes,
            n_inputs: self.n_inputs,
            n_kept: self.n_kept,
            input_extent: self.input_extent.clone(),
            order_name: self.order_name.to_string(),
            storage: self.storage,
        };
        use bincode::Options;
        options(MAX_PLAN_BYTES).serialize(&w).map_err(|e| format!("encoding the plan: {e}"))
    }

    /// A plan from [`Self::to_bytes`]'s bytes, validated (see the module documentation); the
    /// error says which step is wrong and why.
    pub fn from_bytes(bytes: &[u8]) -> Result<Plan, String> {
        use bincode::Options;
        let w: WirePlan =
            options(bytes.len() as u64).deserialize(bytes).map_err(|e| format!("the plan does not decode: {e}"))?;
        let order_name = ORDER_NAMES
            .iter()
            .copied()
            .find(|n| *n == w.order_name)
            .ok_or_else(|| format!("unknown execution order `{}`", w.order_name))?;
        let steps = w
            .steps
            .into_iter()
            .map(|s| Step {
                node: NodeIndex::new(s.node as usize),
                work: s.work,
                srcs: s.srcs,
                views: vec![],
                out_len: s.out_len,
                dtype: s.dtype,
                loc: s.loc,
            })
            .collect();
        let mut plan = Plan {
            dyn_dims: w.dyn_dims,
            steps,
            arena_bytes: w.arena_bytes,
            n_inputs: w.n_inputs,
            n_kept: w.n_kept,
            input_extent: w.input_extent,
            order_name,
            storage: w.storage,
            classes: vec![],
            buckets: vec![],
        };
        plan.validate()?;
        // the buckets are a function of the steps: made again, not trusted from the file
        plan.buckets = super::collective::buckets(&plan.steps, super::collective::BUCKET_BYTES);
        super::collective::check(&plan.steps, &plan.buckets)?;
        Ok(plan)
    }

    /// Bytes a run holds: the arena, every kept output and every input at its extent.
    pub fn run_bytes(&self) -> u128 {
        let kept: u128 =
            self.steps.iter().filter(|s| matches!(s.loc, Loc::Kept(_))).map(|s| self.bytes_of(s) as u128).sum();
        let inputs: u128 = self.input_extent.iter().map(|&e| e as u128 * 4).sum();
        self.arena_bytes as u128 + kept + inputs
    }

    /// The elements each step's buffer holds (an input: the extent its views read), for a
    /// backend checking what it runs beside the plan.
    pub fn buffer_lens(&self) -> Vec<usize> {
        self.steps
            .iter()
            .map(|s| match s.loc {
                Loc::Input(k) => self.input_extent.get(k).copied().unwrap_or(0),
                _ => s.out_len.max(1),
            })
            .collect()
    }

    /// Check everything an executor trusts (see the module documentation).
    pub fn validate(&self) -> Result<(), String> {
        if self.input_extent.len() != self.n_inputs {
            return Err(format!("{} input extents for {} inputs", self.input_extent.len(), self.n_inputs));
        }
        let (mut inputs, mut kept) = (0usize, vec![false; self.n_kept]);
        // the length in elements each step's buffer is known to hold
        let mut len = Vec::with_capacity(self.steps.len());
        for (i, s) in self.steps.iter().enumerate() {
            let bad = |why: String| format!("step {i}: {why}");
            if s.srcs.iter().any(|&si| si >= i) {
                return Err(bad(format!("reads step(s) {:?}, not all before it", s.srcs)));
            }
            if s.out_len > usize::MAX / 16 {
                return Err(bad(format!("an output of {} elements", s.out_len)));
            }
            match s.loc {
                Loc::Input(k) => {
                    if !matches!(s.work, Work::Input { .. }) || k != inputs {
                        return Err(bad(format!("input slot {k} out of order or not an input")));
                    }
                    inputs += 1;
                    // executors check each input's length against its extent before a run
                    len.push(self.input_extent[k]);
                    continue;
                }
                Loc::Arena(off) => {
                    let end = off.checked_add(self.bytes_of(s)).ok_or_else(|| bad("arena offset overflows".into()))?;
                    if end > self.arena_bytes || off % self.storage.elem_bytes(s.dtype) != 0 {
                        return Err(bad(format!(
                            "a {}-byte buffer at offset {off} of a {}-byte arena",
                            self.bytes_of(s),
                            self.arena_bytes
                        )));
                    }
                }
                Loc::Kept(k) => match kept.get_mut(k) {
                    Some(seen @ false) => *seen = true,
                    _ => return Err(bad(format!("kept slot {k} of {} used twice or out of range", self.n_kept))),
                },
            }
            if matches!(s.work, Work::Input { .. }) {
                return Err(bad("an input outside the input slots".into()));
            }
            let src_len = |j: usize| len[s.srcs[j]];
            match &s.work {
                Work::Value(_) | Work::Input { .. } => {}
                Work::Other => return Err(bad("a luminal operator (only a graph can run it)".into())),
                Work::Fused(k) => {
                    if s.srcs.len() != k.loads.len() {
                        return Err(bad(format!("{} sources for {} loads", s.srcs.len(), k.loads.len())));
                    }
                    check_kernel(k, s.out_len, &(0..s.srcs.len()).map(src_len).collect::<Vec<_>>()).map_err(bad)?;
                }
                Work::AllReduce(_) => {
                    if s.srcs.len() != 1 || src_len(0) < s.out_len {
                        return Err(bad(format!(
                            "an all-reduce of {} elements from {} source(s)",
                            s.out_len,
                            s.srcs.len()
                        )));
                    }
                }
                Work::Gemm(g) => {
                    if s.srcs.len() != 2 {
                        return Err(bad(format!("a product with {} sources", s.srcs.len())));
                    }
                    check_gemm(g, s.out_len, src_len(0), src_len(1)).map_err(bad)?;
                }
            }
            len.push(s.out_len.max(1));
        }
        if inputs != self.n_inputs || kept.iter().any(|k| !k) {
            return Err(format!("{inputs} of {} inputs present, kept slots {kept:?}", self.n_inputs));
        }
        check_arena_overlaps(self)
    }
}

/// The smallest and largest offset `base + sum(j_a * stride_a)` over `j_a` in `lo_a..hi_a`
/// (`None` when some range is empty: nothing is addressed).
fn span(base: isize, axes: impl Iterator<Item = (isize, usize, usize)>) -> Option<(i128, i128)> {
    let (mut lo, mut hi) = (base as i128, base as i128);
    for (stride, a, b) in axes {
        if b <= a {
            return None;
        }
        let (x, y) = (stride as i128 * a as i128, stride as i128 * (b - 1) as i128);
        lo += x.min(y);
        hi += x.max(y);
    }
    Some((lo, hi))
}

fn inside(what: &str, s: Option<(i128, i128)>, len: usize) -> Result<(), String> {
    match s {
        Some((lo, hi)) if lo < 0 || hi >= len as i128 => {
            Err(format!("{what} addresses elements {lo}..={hi} of a {len}-element buffer"))
        }
        _ => Ok(()),
    }
}

/// Do the axes `(len, stride)` address each element of `0..total` once? (An empty iteration
/// space addresses nothing: then `total` must be 0.)
fn dense(mut axes: Vec<(usize, isize)>, total: usize) -> bool {
    if axes.iter().any(|a| a.0 == 0) {
        return total == 0;
    }
    axes.retain(|a| a.0 > 1);
    axes.sort_by_key(|a| a.1);
    let mut acc = 1isize;
    for (l, s) in axes {
        if s != acc {
            return false;
        }
        acc = match acc.checked_mul(l as isize) {
            Some(a) => a,
            None => return false,
        };
    }
    acc as usize == total
}

fn check_program(p: &Program, loads: usize, stages: usize) -> Result<(), String> {
    if p.instrs.is_empty() || p.instrs.len() > u16::MAX as usize {
        return Err(format!("a program of {} instructions", p.instrs.len()));
    }
    for (i, ins) in p.instrs.iter().enumerate() {
        let ok = match *ins {
            Instr::Load(k) => (k as usize) < loads,
            Instr::Stage(k) => (k as usize) < stages,
            Instr::Const(_) => true,
            Instr::Unary(_, a) => (a as usize) < i,
            Instr::Binary(_, a, b) => (a as usize) < i && (b as usize) < i,
        };
        if !ok {
            return Err(format!("instruction {i} ({ins:?}) refers to a value it cannot read"));
        }
    }
    Ok(())
}

/// That a kernel reads inside its sources of `src_lens` elements and writes its output once,
/// inside a `step_len`-element buffer (also for kernels a backend stores beside the plan).
pub(crate) fn check_kernel(k: &FusedKernel, step_len: usize, src_lens: &[usize]) -> Result<(), String> {
    let rank = k.dims.len();
    check_program(&k.program, k.loads.len(), k.stages.len())?;
    for (j, (p, _)) in k.stages.iter().enumerate() {
        check_program(p, k.loads.len(), j)?;
    }
    if !k.stages.is_empty() && rank == 0 {
        return Err("row stages in a kernel without rows".into());
    }
    if k.out_strides.len() != rank || k.reduce.is_some_and(|(a, _)| a >= rank) {
        return Err(format!("a rank-{rank} kernel with {} output strides, reduce {:?}", k.out_strides.len(), k.reduce));
    }
    k.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("the iteration space overflows")?;
    for (l, (spec, &len)) in k.loads.iter().zip(src_lens).enumerate() {
        if spec.strides.len() != rank || spec.lo.len() != rank || spec.hi.len() != rank {
            return Err(format!("load {l} has a view of another rank than the kernel's {rank}"));
        }
        if spec.hi.iter().zip(&k.dims).any(|(h, d)| h > d) {
            return Err(format!("load {l} is valid past the iteration space"));
        }
        let axes = (0..rank).map(|a| (spec.strides[a], spec.lo[a], spec.hi[a]));
        inside(&format!("load {l}"), span(spec.offset, axes), len)?;
    }
    let red = k.reduce.map(|r| r.0);
    let out_axes: Vec<(usize, isize)> =
        (0..rank).filter(|&a| Some(a) != red).map(|a| (k.dims[a], k.out_strides[a])).collect();
    if red.is_some_and(|a| k.out_strides[a] != 0) || !dense(out_axes, k.out_len) || k.out_len > step_len.max(1) {
        return Err(format!(
            "output strides {:?} over dims {:?} do not fill {} elements of a {step_len}-element buffer once",
            k.out_strides, k.dims, k.out_len
        ));
    }
    Ok(())
}

fn check_gemm(g: &GemmPlan, step_len: usize, a_len: usize, b_len: usize) -> Result<(), String> {
    let all: Vec<&Ax> = [&g.m, &g.n, &g.k].into_iter().chain(&g.loops).chain(&g.k_loops).collect();
    all.iter().try_fold(1usize, |a, x| a.checked_mul(x.len)).ok_or("the product's size overflows")?;
    if all.iter().any(|x| x.len == 0) || g.out_len == 0 {
        return Ok(()); // nothing is read; the output (if any) is filled with zeros
    }
    let a_axes = [&g.m, &g.k].into_iter().chain(&g.loops).chain(&g.k_loops).map(|x| (x.sa, 0, x.len));
    let b_axes = [&g.n, &g.k].into_iter().chain(&g.loops).chain(&g.k_loops).map(|x| (x.sb, 0, x.len));
    inside("operand A", span(g.base.0, a_axes), a_len)?;
    inside("operand B", span(g.base.1, b_axes), b_len)?;
    let c_axes: Vec<(usize, isize)> = [&g.m, &g.n].into_iter().chain(&g.loops).map(|x| (x.len, x.sc)).collect();
    if !dense(c_axes, g.out_len) || g.out_len > step_len.max(1) {
        return Err(format!("the output does not fill {} elements of a {step_len}-element buffer once", g.out_len));
    }
    Ok(())
}

/// Arena buffers alive at the same time must not overlap (executors hand out disjoint slices).
fn check_arena_overlaps(plan: &Plan) -> Result<(), String> {
    let n = plan.steps.len();
    let mut last: Vec<usize> = (0..n).collect();
    for (i, s) in plan.steps.iter().enumerate() {
        for &si in &s.srcs {
            last[si] = last[si].max(i);
        }
    }
    // (offset, end, first, last) of every arena buffer, by offset
    let mut bufs: Vec<(usize, usize, usize, usize)> = plan
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.loc {
            Loc::Arena(off) => Some((off, off + plan.bytes_of(s), i, last[i])),
            _ => None,
        })
        .collect();
    bufs.sort();
    // sweep by offset: a buffer overlaps an earlier one whose end lies past its start
    let mut open: Vec<(usize, usize, usize, usize)> = vec![];
    for b in bufs {
        open.retain(|o| o.1 > b.0);
        if let Some(o) = open.iter().find(|o| o.2 <= b.3 && b.2 <= o.3) {
            return Err(format!("steps {} and {} share arena bytes while both are alive", o.2, b.2));
        }
        open.push(b);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::plan::Planner;
    use crate::backend::Passes;
    use crate::graph::{dims, Handles};
    use luminal::prelude::*;

    /// `softmax(x W) + b` with a dynamic batch, compiled, at batch 3.
    fn graph() -> (Box<Graph>, NodeIndex, NodeIndex, NodeIndex, NodeIndex) {
        let mut cx = Box::new(Graph::new());
        let x = cx.named_tensor::<(dims::Batch, Const<5>)>("x");
        let w = cx.named_tensor::<R2<5, 4>>("w");
        let b = cx.named_tensor::<R1<4>>("b");
        let y = x.matmul(w).softmax::<1>() + b.expand();
        cx.no_delete.extend([y.id, w.id, b.id]);
        let mut h = Handles(vec![y.id, x.id, w.id, b.id]);
        cx.compile(Passes::default(), &mut h);
        cx.set_dyn_dim(dims::BATCH, 3);
        (cx, h.0[0], h.0[1], h.0[2], h.0[3])
    }

    /// Every way of pointing a kernel, a product or a buffer outside what it may touch is
    /// refused by name.
    #[test]
    fn altered_plans_are_refused_before_they_run() {
        let (cx, ..) = graph();
        let bytes = Planner::new(&cx).plan(&cx).unwrap().to_bytes(|_| String::new()).unwrap();
        fn fused(p: &mut Plan) -> &mut FusedKernel {
            p.steps.iter_mut().find_map(|s| if let Work::Fused(k) = &mut s.work { Some(k) } else { None }).unwrap()
        }
        type Edit = fn(&mut Plan, fn(&mut Plan) -> &mut FusedKernel);
        let edits: Vec<(&str, Edit, &str)> = vec![
            ("a load past its buffer", |p, f| f(p).loads[0].offset += 1000, "addresses elements"),
            ("a negative load", |p, f| f(p).loads[0].offset = -1, "addresses elements"),
            ("an output written twice", |p, f| f(p).out_strides.iter_mut().for_each(|s| *s = 0), "once"),
            ("an output longer than its length", |p, f| f(p).out_len = 0, "once"),
            (
                "a register from the future",
                |p, f| f(p).program.instrs[0] = Instr::Unary(crate::backend::ir::UnaryOp::Exp2, 3),
                "cannot read",
            ),
            ("a missing load", |p, f| f(p).program.instrs[0] = Instr::Load(9), "cannot read"),
            ("a source from the future", |p, _| p.steps[2].srcs = vec![40], "not all before it"),
            ("a buffer past the arena", |p, _| p.arena_bytes = 4, "arena"),
            (
                "a product reading past A",
                |p, _| {
                    for s in &mut p.steps {
                        if let Work::Gemm(g) = &mut s.work {
                            g.base.0 += 7;
                        }
                    }
                },
                "operand A",
            ),
        ];
        for (what, edit, want) in edits {
            let mut p = Plan::from_bytes(&bytes).unwrap();
            edit(&mut p, fused);
            let e = p.validate().expect_err(what);
            assert!(e.contains(want), "{what}: {e}");
        }
        let e = Plan::from_bytes(&bytes[..bytes.len() / 2]).err().unwrap();
        assert!(e.contains("does not decode"), "{e}");
    }

    #[test]
    fn a_plan_with_graph_only_operators_has_no_bytes() {
        let mut cx = Graph::new();
        let x = cx.named_tensor::<R1<3>>("x");
        let y = x.exp2();
        cx.no_delete.insert(y.id);
        let plan = Planner::new(&cx).plan(&cx).unwrap();
        let e = plan.to_bytes(|s| format!("node {}", s.node.index())).unwrap_err();
        assert!(e.contains("1 step(s)") && e.contains("node 1"), "{e}");
    }
}
