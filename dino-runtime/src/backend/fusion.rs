//! Elementwise fusion: maximal chains of elementwise primitives become one [`FusedOp`].
//!
//! ```text
//!   a ──┐                        a ──┐
//!       Mul ── Add ── Exp2 ──▶       Fused[Mul+Add+Exp2] ──▶
//!   b ──┘      │                 b ──┘   │
//!   c ─────────┘                 c ──────┘
//! ```
//!
//! Every elementwise primitive (unary, binary, `Contiguous`, float constants) is either
//! *inlined* into all its consumers or is the *root* of a kernel; every reduction is a root
//! whose kernel evaluates its inlined producers and reduces one axis. A node is inlined when
//! it is not kept, all its consumers are fusible, every consumer reads it through a view that
//! composes (permutes and broadcasts over the node's own dims: no pad, slice or reshape), and,
//! when several kernels would each recompute it, its inlined expression is cheap.
//! Inputs of a kernel are the materialized nodes it loads, each through the composition of
//! the views on the path; identical loads and subexpressions are shared.
use luminal::op::{Constant, ConstantValue, Operator};
use luminal::prelude::petgraph::{algo::toposort, visit::EdgeRef, Direction};
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use super::fused::FusedOp;
use super::gemm::GemmOp;
use super::ir::{BinaryOp, ProgramBuilder, ReduceKind, Reg, UnaryOp};
use crate::autograd::Prim;
use crate::graph::view::{is_plain, logical_dims, phys_dims};

/// Recomputing an inlined expression in several kernels is allowed up to this arithmetic cost
/// (transcendentals count 4, other primitives 1)...
pub const DUPLICATION_BUDGET: u32 = 40;

/// ...and only when it does not add memory traffic: an expression reading `k` buffers, inlined
/// into `m` kernels, reads `m * k` buffers instead of `k + 1 + m` (compute once, write, read
/// back `m` times). Without this rule a residual stream, a chain of additions, would be
/// recomputed from every earlier block's outputs by each later one.
fn duplication_pays(k: usize, m: usize) -> bool {
    m * k <= k + 1 + m
}

/// The elementwise-fusion pass. See the module documentation.
#[derive(Debug, Default)]
pub struct FusionPass;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Const(f32),
    Unary(UnaryOp),
    Binary(BinaryOp),
    Copy,
    Reduce(usize, ReduceKind),
    Opaque,
}

impl Kind {
    fn of(op: &dyn Operator) -> Kind {
        match Prim::of(op) {
            Some(Prim::Constant) => match op.as_any().downcast_ref::<Constant>().map(|c| &c.0) {
                Some(ConstantValue::Float(v)) => Kind::Const(*v),
                _ => Kind::Opaque,
            },
            Some(Prim::Log2) => Kind::Unary(UnaryOp::Log2),
            Some(Prim::Exp2) => Kind::Unary(UnaryOp::Exp2),
            Some(Prim::Sin) => Kind::Unary(UnaryOp::Sin),
            Some(Prim::Sqrt) => Kind::Unary(UnaryOp::Sqrt),
            Some(Prim::Recip) => Kind::Unary(UnaryOp::Recip),
            Some(Prim::Add) => Kind::Binary(BinaryOp::Add),
            Some(Prim::Mul) => Kind::Binary(BinaryOp::Mul),
            Some(Prim::Mod) => Kind::Binary(BinaryOp::Mod),
            Some(Prim::LessThan) => Kind::Binary(BinaryOp::Lt),
            Some(Prim::Contiguous) | Some(Prim::Detach) => Kind::Copy,
            Some(Prim::SumReduce(a)) => Kind::Reduce(a, ReduceKind::Sum),
            Some(Prim::MaxReduce(a)) => Kind::Reduce(a, ReduceKind::Max),
            _ => Kind::Opaque,
        }
    }
    fn fusible(self) -> bool {
        self != Kind::Opaque
    }
    fn elementwise(self) -> bool {
        !matches!(self, Kind::Reduce(..) | Kind::Opaque)
    }
    fn cost(self) -> u32 {
        match self {
            Kind::Unary(UnaryOp::Exp2 | UnaryOp::Log2 | UnaryOp::Sin) => 4,
            Kind::Const(_) | Kind::Copy => 0,
            _ => 1,
        }
    }
}

/// Buffer dims of a node's output, for the node kinds that can appear after the GEMM pass.
fn buffer_dims(
    cx: &Graph,
    n: NodeIndex,
    kind: Kind,
    known: &FxHashMap<NodeIndex, Vec<Expression>>,
) -> Option<Vec<Expression>> {
    let op = cx.graph.node_weight(n)?;
    let srcs = cx.get_sources(n);
    if let Some(g) = op.as_any().downcast_ref::<GemmOp>() {
        return Some(g.out_dims(&srcs[0].2));
    }
    if let Some(f) = op.as_any().downcast_ref::<FusedOp>() {
        return Some(f.out_dims());
    }
    if op.as_any().is::<crate::dist::AllReduce>() {
        // a contiguous copy of its source's logical elements (summed over the ranks)
        return Some(logical_dims(&srcs[0].2));
    }
    match kind {
        Kind::Const(_) => Some(vec![]),
        Kind::Unary(_) => known.get(&srcs[0].0).cloned(),
        Kind::Binary(_) | Kind::Copy => Some(logical_dims(&srcs[0].2)),
        Kind::Reduce(a, _) => {
            let mut d = logical_dims(&srcs[0].2);
            d.remove(a);
            Some(d)
        }
        Kind::Opaque if srcs.is_empty() => cx
            .graph
            .edges_directed(n, Direction::Outgoing)
            .filter_map(|e| e.weight().as_data())
            .map(|(_, _, st)| phys_dims(&st))
            .next(),
        Kind::Opaque => None,
    }
}

/// Can a consumer read a node with dims `dims` through `w` as a pure re-indexing of the
/// node's logical elements (so the node's expression can be evaluated in place of the read)?
fn composes(w: &ShapeTracker, dims: &[Expression]) -> bool {
    !w.is_sliced() && !w.is_padded() && phys_dims(w) == dims
}

/// The view that reads, through `outer` (a pure view of a node's buffer), what the node read
/// through `inner` (a view whose logical dims are the node's dims).
pub fn compose(inner: ShapeTracker, outer: &ShapeTracker) -> ShapeTracker {
    let rank_of = |p: usize| (0..p).filter(|&q| !outer.fake[q]).count();
    let order: Vec<usize> =
        (0..outer.len()).map(|i| outer.indexes[i]).filter(|&p| !outer.fake[p]).map(rank_of).collect();
    let mut t = inner;
    if order.iter().enumerate().any(|(a, b)| a != *b) {
        t.permute(&order);
    }
    for i in 0..outer.len() {
        let p = outer.indexes[i];
        if outer.fake[p] {
            t.expand(i, outer.dims[p]);
        }
    }
    t
}

struct Analysis {
    kind: FxHashMap<NodeIndex, Kind>,
    dims: FxHashMap<NodeIndex, Vec<Expression>>,
    inline: FxHashSet<NodeIndex>,
}

/// Root sets larger than this count as "many".
const MANY: usize = 16;

fn analyse(cx: &Graph, order: &[NodeIndex]) -> Analysis {
    let mut a = Analysis { kind: FxHashMap::default(), dims: FxHashMap::default(), inline: FxHashSet::default() };
    let consumers = |n: NodeIndex| -> Vec<(NodeIndex, ShapeTracker)> {
        cx.graph
            .edges_directed(n, Direction::Outgoing)
            .filter_map(|e| e.weight().as_data().map(|(_, _, st)| (e.target(), st)))
            .collect()
    };
    // 1. candidates: elementwise, not kept, every consumer fusible and reading a composable view
    for &n in order {
        let k = Kind::of(cx.graph.node_weight(n).expect("node").as_ref());
        a.kind.insert(n, k);
        if let Some(d) = buffer_dims(cx, n, k, &a.dims) {
            a.dims.insert(n, d);
        }
        if !k.elementwise() || cx.no_delete.contains(&n) || cx.to_retrieve.contains(&n) {
            continue;
        }
        let Some(dims) = a.dims.get(&n) else { continue };
        let cons = consumers(n);
        let fuse = !cons.is_empty()
            && cons.iter().all(|(c, st)| {
                Kind::of(cx.graph.node_weight(*c).expect("consumer").as_ref()).fusible() && composes(st, dims)
            });
        if fuse {
            a.inline.insert(n);
        }
    }
    // 2. un-inline what would be recomputed in several kernels at a cost, until stable: the
    //    kernels a node lands in are the roots reached through inlined consumers
    loop {
        let mut roots: FxHashMap<NodeIndex, Vec<NodeIndex>> = FxHashMap::default();
        for &n in order.iter().rev() {
            if !a.inline.contains(&n) {
                continue;
            }
            let mut r: Vec<NodeIndex> = vec![];
            for (c, _) in consumers(n) {
                match roots.get(&c) {
                    Some(rc) if a.inline.contains(&c) => r.extend(rc.iter().copied()),
                    _ => r.push(c),
                }
                if r.len() > 4 * MANY {
                    r.sort_unstable();
                    r.dedup();
                }
            }
            r.sort_unstable();
            r.dedup();
            r.truncate(MANY + 1);
            roots.insert(n, r);
        }
        let mut cost: FxHashMap<NodeIndex, u32> = FxHashMap::default();
        let mut reads: FxHashMap<NodeIndex, Vec<NodeIndex>> = FxHashMap::default();
        let mut changed = false;
        for &n in order {
            let k = a.kind[&n];
            let srcs = cx.get_sources(n);
            let own =
                k.cost() + srcs.iter().filter(|(s, _, _)| a.inline.contains(s)).map(|(s, _, _)| cost[s]).sum::<u32>();
            cost.insert(n, own);
            let mut r: Vec<NodeIndex> = vec![];
            for (src, _, _) in &srcs {
                match reads.get(src) {
                    Some(rs) if a.inline.contains(src) => r.extend(rs.iter().copied()),
                    _ if matches!(a.kind.get(src), Some(Kind::Const(_))) => {}
                    _ => r.push(*src),
                }
            }
            r.sort_unstable();
            r.dedup();
            let k_reads = r.len();
            reads.insert(n, r);
            if !a.inline.contains(&n) {
                continue;
            }
            // kernels that would recompute it: its roots, but a node read by one consumer adds
            // no traffic whatever that consumer's fate
            let distinct: FxHashSet<NodeIndex> = consumers(n).into_iter().map(|c| c.0).collect();
            let m = roots[&n].len().min(distinct.len());
            if m > 1 && (own > DUPLICATION_BUDGET || !duplication_pays(k_reads, m)) {
                a.inline.remove(&n);
                changed = true;
            }
        }
        if !changed {
            return a;
        }
    }
}

/// Builds the program of one kernel.
struct Emitter<'a> {
    cx: &'a Graph,
    an: &'a Analysis,
    b: ProgramBuilder,
    inputs: Vec<(NodeIndex, ShapeTracker)>,
    labels: Vec<&'static str>,
}

impl Emitter<'_> {
    /// The value of node `n`'s buffer read through `w`.
    fn emit(&mut self, n: NodeIndex, w: ShapeTracker) -> Reg {
        if !self.an.inline.contains(&n) {
            let i = match self.inputs.iter().position(|(m, st)| *m == n && *st == w) {
                Some(i) => i,
                None => {
                    self.inputs.push((n, w));
                    self.inputs.len() - 1
                }
            };
            return self.b.load(i as u16);
        }
        self.emit_op(n, w)
    }

    /// The value of `n`'s own operation at the points `w` reads.
    fn emit_op(&mut self, n: NodeIndex, w: ShapeTracker) -> Reg {
        let srcs = self.cx.get_sources(n);
        let k = self.an.kind[&n];
        self.labels.push(label(k));
        match k {
            Kind::Const(v) => self.b.constant(v),
            // unary ops keep their input's buffer layout: the same view reads the input
            Kind::Unary(op) => {
                let x = self.emit(srcs[0].0, w);
                self.b.unary(op, x)
            }
            Kind::Binary(op) => {
                let x = self.emit(srcs[0].0, compose(srcs[0].2, &w));
                let y = self.emit(srcs[1].0, compose(srcs[1].2, &w));
                self.b.binary(op, x, y)
            }
            Kind::Copy => self.emit(srcs[0].0, compose(srcs[0].2, &w)),
            Kind::Reduce(..) | Kind::Opaque => unreachable!("only elementwise nodes are inlined"),
        }
    }
}

fn label(k: Kind) -> &'static str {
    match k {
        Kind::Const(_) => "Const",
        Kind::Unary(UnaryOp::Log2) => "Log2",
        Kind::Unary(UnaryOp::Exp2) => "Exp2",
        Kind::Unary(UnaryOp::Sin) => "Sin",
        Kind::Unary(UnaryOp::Sqrt) => "Sqrt",
        Kind::Unary(UnaryOp::Recip) => "Recip",
        Kind::Binary(BinaryOp::Add) => "Add",
        Kind::Binary(BinaryOp::Mul) => "Mul",
        Kind::Binary(BinaryOp::Mod) => "Mod",
        Kind::Binary(BinaryOp::Lt) => "LessThan",
        Kind::Copy => "Contiguous",
        Kind::Reduce(_, ReduceKind::Sum) => "SumReduce",
        Kind::Reduce(_, ReduceKind::Max) => "MaxReduce",
        Kind::Opaque => "?",
    }
}

impl Compiler for FusionPass {
    fn compile<T: ToIdsMut>(&self, cx: &mut Graph, mut remap: T) {
        let order = toposort(&cx.graph, None).expect("luminal graphs are acyclic");
        let an = analyse(cx, &order);
        let roots: Vec<NodeIndex> =
            order.iter().copied().filter(|n| an.kind[n].fusible() && !an.inline.contains(n)).collect();

        // Build every kernel from the original graph, then rewire.
        let mut built = vec![];
        for &root in &roots {
            let mut e = Emitter { cx, an: &an, b: ProgramBuilder::default(), inputs: vec![], labels: vec![] };
            let (dims, reduce, result) = match an.kind[&root] {
                Kind::Reduce(axis, kind) => {
                    let (src, _, st) = cx.get_sources(root)[0];
                    e.labels.push(label(an.kind[&root]));
                    let r = e.emit(src, st);
                    (logical_dims(&st), Some((axis, kind)), r)
                }
                _ => {
                    let dims = an.dims[&root].clone();
                    let r = e.emit_op(root, ShapeTracker::new(&dims));
                    (dims, None, r)
                }
            };
            let fills = e
                .inputs
                .iter()
                .map(|(_, st)| match reduce {
                    Some((_, ReduceKind::Max)) if !is_plain(st) && (st.is_padded() || st.is_sliced()) => {
                        f32::NEG_INFINITY
                    }
                    _ => 0.0,
                })
                .collect();
            let mut labels: Vec<&str> = vec![];
            for l in &e.labels {
                if !labels.contains(l) {
                    labels.push(l);
                }
            }
            let op = FusedOp {
                program: e.b.finish(result),
                stages: vec![],
                dims,
                reduce,
                fills,
                label: labels.join("+"),
                dyn_map: &cx.dyn_map,
            };
            built.push((root, op, e.inputs));
        }
        let mut new_of: FxHashMap<NodeIndex, NodeIndex> = FxHashMap::default();
        for (root, op, inputs) in built {
            let mut b = cx.add_op(op);
            for (src, st) in inputs {
                b = b.input(src, 0, st);
            }
            new_of.insert(root, b.finish());
        }
        for (&root, &new) in &new_of {
            move_outgoing_edge(root, new, &mut cx.graph);
            move_references(&mut remap, &mut cx.no_delete, &mut cx.to_retrieve, root, new);
        }
        for n in order {
            if new_of.contains_key(&n) || an.inline.contains(&n) {
                cx.graph.remove_node(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::view::exprs;

    #[test]
    fn compose_permute_then_broadcast() {
        // inner: a [2,3] buffer read transposed -> logical [3,2]
        let mut inner = ShapeTracker::new(&exprs(&[2, 3]));
        inner.permute(&[1, 0]);
        // outer: the node's [3,2] buffer read transposed and broadcast -> [2,4,3]
        let mut outer = ShapeTracker::new(&exprs(&[3, 2]));
        outer.permute(&[1, 0]);
        outer.expand(1, 4.into());
        let c = compose(inner, &outer);
        let l = super::super::layout::Layout::of(&c, &FxHashMap::default()).unwrap();
        // logical (i, k, j) reads a[i][j]: strides (3, 0, 1)
        assert_eq!(l.dims(), vec![2, 4, 3]);
        assert_eq!(l.axes.iter().map(|a| a.stride).collect::<Vec<_>>(), vec![3, 0, 1]);
    }
}
