//! From a compiled graph to a [`Plan`]: the steps in a fixed order, each bound to concrete
//! dims and strides, and every buffer placed.
//!
//! ```text
//!   compiled graph ──candidate orders (schedule.rs)──► one Plan per order
//!        │                                               │ steps: Input | Value | Fused | Gemm | AllReduce | Other
//!        │                                               │ locs:  input slot | arena bytes | kept slot
//!        └── dyn dims ('b', 'g', ...) ───────────────────┴─► the smallest arena wins
//! ```
//!
//! A plan is valid for one set of dynamic dims; [`Plan::is_for`] tells an executor when to ask
//! the [`Planner`] again. Inputs are moved out of the graph's tensor store for a run and back
//! if kept; kept outputs are moved into it, so weights are never copied: [`Plan::check_inputs`]
//! and [`Plan::hand_back`] are that bookkeeping, shared by every executor.
use std::any::Any;

use luminal::op::{Constant, ConstantValue, Function};
use luminal::prelude::petgraph::Direction;
use luminal::prelude::*;
use rustc_hash::FxHashMap;

use super::arena::{self, Interval};
use super::collective::{self, Bucket};
use super::precision::{OpClass, Policy, Storage};
use super::{FusedKernel, GemmPlan};
use crate::autograd::Prim;
use crate::backend::fused::FusedOp;
use crate::backend::gemm::GemmOp;
use crate::backend::layout::Layout;
use crate::error::{Error, Result};

/// How a buffer's elements are stored. Arithmetic inside kernels is always fp32; the storage
/// type decides what is loaded and stored (the precision pass, [`super::precision`], chooses
/// it per buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    #[default]
    F32,
    /// bfloat16: f32's exponent, 8 significant bits.
    Bf16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<DType> {
        [DType::F32, DType::Bf16].into_iter().find(|d| d.name() == s).ok_or_else(|| Error::Config {
            what: format!("storage type `{s}`"),
            why: "the storage types are f32 and bf16".into(),
        })
    }
}

/// Where a node's output lives during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Loc {
    /// The k-th input buffer, moved in from the graph's store.
    Input(usize),
    /// At this byte offset of the arena.
    Arena(usize),
    /// The k-th kept output, a buffer of its own moved to the store after the run.
    Kept(usize),
}

/// What a step computes.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum Work {
    Input {
        name: String,
    },
    Value(f32),
    Fused(FusedKernel),
    Gemm(GemmPlan),
    /// Its source summed over the ranks of the run ([`crate::dist::AllReduce`]): the executor
    /// copies the source into this step's buffer, and reduces the buffers of a [`Bucket`]
    /// together with its process group.
    AllReduce(Reduce),
    /// Any other operator (luminal's `Operator::process`; the CPU alone runs these).
    Other,
}

/// An all-reduce step: what it reduces (for profiles and timeouts) and the factor applied to
/// the sum.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reduce {
    pub name: String,
    pub scale: f32,
}

/// One node of the schedule.
pub struct Step {
    pub node: NodeIndex,
    pub work: Work,
    /// Step index of each source.
    pub srcs: Vec<usize>,
    /// The graph's view of each source (aligned with `srcs`); empty in a plan loaded from an
    /// artifact, which holds only steps that need none ([`Work::Other`] needs them).
    pub views: Vec<ShapeTracker>,
    /// Output elements.
    pub out_len: usize,
    pub dtype: DType,
    pub loc: Loc,
}

impl Step {
    /// Bytes of the output buffer (at least one element) held as `storage` holds it.
    pub fn bytes(&self, storage: Storage) -> usize {
        self.out_len.max(1) * storage.elem_bytes(self.dtype)
    }
}

/// The dynamic dims a plan was made for, sorted by name.
pub type DynDims = Vec<(char, usize)>;

/// The current dynamic dims of `cx`, sorted.
pub fn dyn_dims(cx: &Graph) -> DynDims {
    let mut d: DynDims = cx.dyn_map.iter().map(|(k, v)| (*k, *v)).collect();
    d.sort();
    d
}

/// The device-neutral result of compilation for one set of dynamic dims.
pub struct Plan {
    pub dyn_dims: DynDims,
    pub steps: Vec<Step>,
    /// Bytes of the arena holding every intermediate.
    pub arena_bytes: usize,
    pub n_inputs: usize,
    pub n_kept: usize,
    /// Per input: the largest extent (elements) any view reads.
    pub input_extent: Vec<usize>,
    /// The execution order chosen (the one with the smallest arena).
    pub order_name: &'static str,
    /// How the executor holds buffers (the arena is laid out for it).
    pub storage: Storage,
    /// The precision pass's class of every step; empty in a plan loaded from an artifact.
    pub classes: Vec<OpClass>,
    /// The all-reduce steps grouped into buckets, in order ([`super::collective`]).
    pub buckets: Vec<Bucket>,
}

/// What a planner is asked for: the precision policy, and how the executor holds buffers.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub policy: Policy,
    pub storage: Storage,
}

/// Makes plans for a compiled graph: the candidate orders are computed once, a plan per set
/// of dynamic dims.
pub struct Planner {
    orders: Vec<(&'static str, Vec<NodeIndex>)>,
    opts: PlanOptions,
}

impl Planner {
    /// Prepare to plan `cx` (after compilation; make a new one if the graph changes): fp32,
    /// each type at its own size.
    pub fn new(cx: &Graph) -> Planner {
        Planner::with_options(cx, PlanOptions::default())
    }

    /// [`Planner::new`] with a precision policy and a storage.
    pub fn with_options(cx: &Graph, opts: PlanOptions) -> Planner {
        Planner { orders: super::schedule::candidates(cx), opts }
    }

    /// Plan every candidate order for the current dynamic dims and keep the one with the
    /// smallest arena.
    pub fn plan(&self, cx: &Graph) -> Result<Plan> {
        let mut best: Option<Plan> = None;
        for (name, order) in &self.orders {
            let p = build(cx, order, name, &self.opts)?;
            if crate::debug::level() >= 1 {
                eprintln!("[dino] order {name}: arena {:.1} MB", p.arena_bytes as f64 * 1e-6);
            }
            if best.as_ref().map(|b| p.arena_bytes < b.arena_bytes).unwrap_or(true) {
                best = Some(p);
            }
        }
        let plan = best.ok_or_else(|| Error::Backend("no execution order".into()))?;
        plan.log(cx);
        Ok(plan)
    }
}

fn build(cx: &Graph, order: &[NodeIndex], order_name: &'static str, opts: &PlanOptions) -> Result<Plan> {
    let dm = &cx.dyn_map;
    let mut step_of: FxHashMap<NodeIndex, usize> = FxHashMap::default();
    let mut steps: Vec<Step> = vec![];
    let (mut n_inputs, mut n_kept) = (0, 0);
    let mut input_extent = vec![];
    for &n in order {
        let op = cx.graph.node_weight(n).expect("node");
        let consumers = cx.graph.edges_directed(n, Direction::Outgoing).filter(|e| !e.weight().is_schedule()).count();
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
                views: vec![],
                out_len: 0,
                dtype: DType::F32,
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
        let (srcs, views): (Vec<usize>, Vec<ShapeTracker>) = srcs.into_iter().unzip();
        let layouts: Vec<Layout> = views.iter().map(|st| Layout::of(st, dm)).collect::<Result<_>>()?;
        // every view must stay inside its buffer
        for (si, l) in srcs.iter().zip(&layouts) {
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
        } else if let Some(ar) = any.downcast_ref::<crate::dist::AllReduce>() {
            // the source is read as one contiguous buffer (the builder materializes it)
            let len = layouts[0].extent();
            if !layouts[0].is_dense() {
                return Err(Error::Backend(format!(
                    "all-reduce `{}` of a strided view: materialize it first",
                    ar.name
                )));
            }
            (Work::AllReduce(Reduce { name: ar.name.clone(), scale: ar.scale }), len)
        } else if let Some(Constant(v, _)) = any.downcast_ref::<Constant>() {
            let v = match v {
                ConstantValue::Float(f) => *f,
                ConstantValue::Expression(e) => {
                    e.exec(dm).ok_or_else(|| Error::Backend(format!("constant {e:?} needs an unset dynamic dim")))?
                        as f32
                }
            };
            (Work::Value(v), 1)
        } else if let (Some(Prim::Log2 | Prim::Exp2 | Prim::Sin | Prim::Sqrt | Prim::Recip), Some(si)) =
            (Prim::of(op.as_ref()), srcs.first())
        {
            // luminal's unary operators map their input's physical buffer (the view passes on)
            let len = match steps[*si].loc {
                Loc::Input(_) => layouts[0].extent(),
                _ => steps[*si].out_len,
            };
            (Work::Other, len)
        } else if let (Some(Prim::SumReduce(d) | Prim::MaxReduce(d)), Some(l)) =
            (Prim::of(op.as_ref()), layouts.first())
        {
            // the reduced axis is gone from the output
            let len = l.axes.iter().enumerate().filter(|(i, _)| *i != d).map(|(_, a)| a.len).product();
            (Work::Other, len)
        } else {
            let len = views.first().map(|st| st.n_elements().exec(dm).unwrap_or(0)).unwrap_or(1);
            (Work::Other, len)
        };
        let loc = if kept {
            n_kept += 1;
            Loc::Kept(n_kept - 1)
        } else {
            Loc::Arena(0)
        };
        step_of.insert(n, steps.len());
        steps.push(Step { node: n, work, srcs, views, out_len, dtype: DType::F32, loc });
    }
    // the precision pass: a storage type per buffer, before the arena is laid out for them
    let classes = super::precision::assign(&mut steps, cx, &opts.policy);
    // lifetimes of arena buffers: from definition to last read
    let mut last = (0..steps.len()).collect::<Vec<_>>();
    for (i, s) in steps.iter().enumerate() {
        for si in &s.srcs {
            last[*si] = last[*si].max(i);
        }
    }
    let arena_steps: Vec<usize> = (0..steps.len()).filter(|&i| steps[i].loc == Loc::Arena(0)).collect();
    let intervals: Vec<Interval> =
        arena_steps.iter().map(|&i| Interval { len: steps[i].bytes(opts.storage), first: i, last: last[i] }).collect();
    let (offsets, arena_bytes) = arena::plan(&intervals);
    for (&i, off) in arena_steps.iter().zip(offsets) {
        steps[i].loc = Loc::Arena(off);
    }
    let buckets = collective::buckets(&steps, collective::BUCKET_BYTES);
    Ok(Plan {
        dyn_dims: dyn_dims(cx),
        steps,
        arena_bytes,
        n_inputs,
        n_kept,
        input_extent,
        order_name,
        storage: opts.storage,
        classes,
        buckets,
    })
}

impl Plan {
    /// Was this plan made for the current dynamic dims of `cx`?
    pub fn is_for(&self, cx: &Graph) -> bool {
        self.dyn_dims == dyn_dims(cx)
    }

    /// The error of an executor that runs this plan only (an artifact's) on `cx`, whose
    /// dynamic dims differ.
    pub fn other_dims(&self, cx: &Graph) -> Error {
        let text = |d: &[(char, usize)]| d.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
        Error::Backend(format!(
            "this plan was compiled for {}, the graph is at {}: compile it again for these sizes",
            text(&self.dyn_dims),
            text(&dyn_dims(cx))
        ))
    }

    /// Steps that launch something (every step but the inputs).
    pub fn kernels(&self) -> usize {
        self.steps.iter().filter(|s| !matches!(s.work, Work::Input { .. })).count()
    }

    /// The input steps in slot order, with their names.
    pub fn inputs(&self) -> impl Iterator<Item = (&Step, &str)> {
        self.steps.iter().filter_map(|s| match &s.work {
            Work::Input { name } => Some((s, name.as_str())),
            _ => None,
        })
    }

    /// Check, before anything is taken from the store, that every input of `cx` is there, holds
    /// data this executor reads (`len_of` gives its length in elements, `None` for a type it
    /// cannot read: `what` names the types it can) and is long enough for every view of it.
    pub fn check_inputs(&self, cx: &Graph, what: &str, len_of: impl Fn(&dyn Any) -> Option<usize>) -> Result<()> {
        for (k, (s, name)) in self.inputs().enumerate() {
            let t = cx.tensors.get(&(s.node, 0)).ok_or_else(|| Error::MissingInput { name: name.to_string() })?;
            let len = len_of(t.data.as_any())
                .ok_or_else(|| Error::Backend(format!("input `{name}` does not hold {what}")))?;
            let need = self.input_extent[k];
            if len < need {
                return Err(Error::WrongSize {
                    name: name.to_string(),
                    shape: "the graph's views of it".into(),
                    expected: need,
                    got: len,
                });
            }
        }
        Ok(())
    }

    /// After a run: kept inputs back into the store (the others to `discard`), kept outputs
    /// into it. `inputs` and `kept` are in slot order.
    pub fn hand_back<B: Data>(&self, cx: &mut Graph, inputs: Vec<B>, kept: Vec<B>, mut discard: impl FnMut(B)) {
        let mut inputs = inputs.into_iter();
        let mut kept = kept.into_iter();
        for s in &self.steps {
            match s.loc {
                Loc::Input(_) => {
                    let b = inputs.next().expect("one buffer per input");
                    if cx.no_delete.contains(&s.node) {
                        cx.tensors.insert((s.node, 0), Tensor::new(b));
                    } else {
                        discard(b);
                    }
                }
                Loc::Kept(_) => {
                    cx.tensors.insert((s.node, 0), Tensor::new(kept.next().expect("one buffer per kept output")));
                }
                Loc::Arena(_) => {}
            }
        }
    }

    /// After a failed run: every input back into the store as it came; no kept output is
    /// stored, so the graph holds what it held before the run.
    pub fn hand_back_inputs<B: Data>(&self, cx: &mut Graph, inputs: Vec<B>) {
        let steps = self.steps.iter().filter(|s| matches!(s.loc, Loc::Input(_)));
        for (s, b) in steps.zip(inputs) {
            cx.tensors.insert((s.node, 0), Tensor::new(b));
        }
    }

    /// A one-line description of step `i`, for profiles.
    pub fn describe(&self, cx: &Graph, i: usize) -> String {
        let s = &self.steps[i];
        let op = cx.graph.node_weight(s.node).map(|o| format!("{o:?}")).unwrap_or_default();
        match &s.work {
            Work::Fused(k) => format!("{op} {}", k.shape_summary()),
            Work::Gemm(g) => format!("Gemm {}", g.shape_summary()),
            _ => op,
        }
    }

    /// Is every buffer f32, and does every product read its operands in f32?
    pub fn is_fp32(&self) -> bool {
        self.steps.iter().all(|s| s.dtype == DType::F32)
            && self.steps.iter().all(|s| !matches!(&s.work, Work::Gemm(g) if g.operands != DType::F32))
    }

    /// Bytes of `s`'s buffer as this plan's executor holds it.
    pub fn bytes_of(&self, s: &Step) -> usize {
        s.bytes(self.storage)
    }

    /// `DINO_DEBUG` >= 1: the plan's size and the precision pass's classes; >= 3: every fused
    /// kernel's programs.
    fn log(&self, cx: &Graph) {
        if crate::debug::level() >= 1 {
            eprintln!(
                "[dino] plan: {} kernels, arena {:.1} MB, order {}",
                self.kernels(),
                self.arena_bytes as f64 * 1e-6,
                self.order_name
            );
            if !self.buckets.is_empty() {
                eprintln!(
                    "[dino] collectives: {} all-reduce steps in {} buckets ({:.2} MB per step)",
                    self.buckets.iter().map(|b| b.members.len()).sum::<usize>(),
                    self.buckets.len(),
                    self.buckets.iter().map(|b| b.elements).sum::<usize>() as f64 * 4e-6
                );
            }
            let rows = super::precision::summary(&self.steps, &self.classes);
            let text: Vec<String> = rows
                .iter()
                .map(|(c, n, e, d)| format!("{c} {n} buffers {:.1} M elements {d}", *e as f64 * 1e-6))
                .collect();
            eprintln!("[dino] pass precision: {}", text.join(" | "));
        }
        if crate::debug::level() >= 3 {
            for (i, s) in self.steps.iter().enumerate() {
                if let Some(f) = cx.graph.node_weight(s.node).and_then(|o| o.as_any().downcast_ref::<FusedOp>()) {
                    eprintln!("[dino] {} {:?} reduce {:?}", self.describe(cx, i), f.dims, f.reduce);
                    for (k, st) in f.stages.iter().enumerate() {
                        eprint!("  stage {k} ({:?}):\n{}", st.kind, st.program);
                    }
                    eprint!("{}", f.program);
                }
            }
        }
    }
}
