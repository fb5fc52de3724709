//! Contractions: every `Mul -> SumReduce` pair becomes one strided batched GEMM.
//!
//! ```text
//!   a ──(view A)──┐                a ──(view A)──┐
//!                 Mul ── SumReduce(k)   ──▶      Gemm{axes}
//!   b ──(view B)──┘                b ──(view B)──┘
//! ```
//!
//! luminal writes every matrix product as a broadcast multiply followed by a sum; autograd's
//! backward products (dX reduces a middle axis, dW the leading ones) have the same form. Each
//! axis of the product is classified from the two views: a summed axis is K; an axis both
//! operands really index is a batch axis; an axis only A indexes (broadcast in B) is an M
//! axis, one only B indexes an N axis. A chain of sums over several axes both operands index
//! (a weight gradient sums over batch *and* tokens) becomes one product with several K axes,
//! merged into one when they are contiguous. Any strides and permutations are fine; the kernel
//! reads the buffers in place.
use luminal::op::{Mul, SumReduce};
use luminal::prelude::petgraph::{visit::EdgeRef, Direction};
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;

use crate::graph::view::logical_dims;

/// The role of one axis of a contraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GemmAxis {
    /// Indexed by both operands and the output.
    Batch,
    /// Indexed by A and the output (broadcast in B).
    M,
    /// Indexed by B and the output (broadcast in A).
    N,
    /// Summed over.
    K,
}

/// A strided batched matrix product summed over its K axes; the output is contiguous over the
/// other axes, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmOp {
    pub axes: Vec<GemmAxis>,
}

impl GemmOp {
    /// Classify the axes of `a * b` summed over the axes `ks`, or `None` when it is not a
    /// product of two matrices (an axis broadcast in both, a K axis broadcast in one, no M and
    /// no N).
    pub fn classify(a: &ShapeTracker, b: &ShapeTracker, ks: &[usize]) -> Option<GemmOp> {
        let mut axes = Vec::with_capacity(a.len());
        for i in 0..a.len() {
            let fa = a.fake[a.indexes[i]];
            let fb = b.fake[b.indexes[i]];
            axes.push(match (ks.contains(&i), fa, fb) {
                (true, false, false) => GemmAxis::K,
                (false, false, false) => GemmAxis::Batch,
                (false, false, true) => GemmAxis::M,
                (false, true, false) => GemmAxis::N,
                _ => return None,
            });
        }
        axes.iter().any(|x| matches!(x, GemmAxis::M | GemmAxis::N)).then_some(GemmOp { axes })
    }

    /// Output dims from A's view.
    pub fn out_dims(&self, a: &ShapeTracker) -> Vec<Expression> {
        logical_dims(a).into_iter().zip(&self.axes).filter(|(_, x)| **x != GemmAxis::K).map(|(d, _)| d).collect()
    }
}

/// The GEMM pass. See the module documentation.
#[derive(Debug, Default)]
pub struct GemmPass;

/// The only consumer of `n`, if `n` has exactly one and is not kept.
fn sole_consumer(cx: &Graph, n: NodeIndex) -> Option<NodeIndex> {
    if cx.no_delete.contains(&n) || cx.to_retrieve.contains(&n) {
        return None;
    }
    let outs: Vec<NodeIndex> = cx.graph.edges_directed(n, Direction::Outgoing).map(|e| e.target()).collect();
    match outs[..] {
        [c] => Some(c),
        _ => None,
    }
}

fn sum_axis(cx: &Graph, n: NodeIndex) -> Option<usize> {
    cx.graph.node_weight(n)?.as_any().downcast_ref::<SumReduce>().map(|r| r.0)
}

impl Compiler for GemmPass {
    fn compile<T: ToIdsMut>(&self, cx: &mut Graph, mut remap: T) {
        let muls: Vec<NodeIndex> =
            cx.graph.node_indices().filter(|n| cx.graph.node_weight(*n).expect("node").as_any().is::<Mul>()).collect();
        for mul in muls {
            let srcs = cx.get_sources(mul);
            let (a, b) = (srcs[0].2, srcs[1].2);
            // slices are an offset and a shorter axis; padding would need zeros
            if [a, b].iter().any(|st| st.is_padded()) {
                continue;
            }
            // Mul -> SumReduce -> SumReduce ...: collect the summed axes in the Mul's coordinates
            let Some(first) = sole_consumer(cx, mul) else { continue };
            let Some(k) = sum_axis(cx, first) else { continue };
            let Some(mut op) = GemmOp::classify(&a, &b, &[k]) else { continue };
            let mut ks = vec![k];
            let mut chain = vec![first];
            while let Some(next) = sole_consumer(cx, chain[chain.len() - 1]).filter(|n| sum_axis(cx, *n).is_some()) {
                // axis of the reduced tensor -> axis of the product
                let remaining: Vec<usize> = (0..a.len()).filter(|i| !ks.contains(i)).collect();
                let axis = remaining[sum_axis(cx, next).expect("a sum")];
                let mut more = ks.clone();
                more.push(axis);
                match GemmOp::classify(&a, &b, &more) {
                    Some(o) => {
                        op = o;
                        ks = more;
                        chain.push(next);
                    }
                    None => break,
                }
            }
            let last = chain[chain.len() - 1];
            let new = cx.add_op(op).input(srcs[0].0, srcs[0].1, a).input(srcs[1].0, srcs[1].1, b).finish();
            move_outgoing_edge(last, new, &mut cx.graph);
            move_references(&mut remap, &mut cx.no_delete, &mut cx.to_retrieve, last, new);
            cx.graph.remove_node(mul);
            for r in chain {
                cx.graph.remove_node(r);
            }
        }
    }
}
