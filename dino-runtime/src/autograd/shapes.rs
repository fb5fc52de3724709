//! Physical buffer dims of every node output.
//!
//! Gradients are kept in the space of the *buffer* a node produces, not of any view of it:
//! `grad[n]` has logical dims equal to `phys[n]`. Those dims follow from the primitive graph.
use luminal::prelude::petgraph::{algo::toposort, Direction};
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;
use rustc_hash::FxHashMap;

use super::prim::Prim;
use crate::graph::view::{logical_dims, phys_dims};

/// Buffer dims of each node whose dims the graph determines.
pub type PhysShapes = FxHashMap<NodeIndex, Vec<Expression>>;

/// Derive the buffer dims of every node, in one pass in topological order:
/// * `Function` (inputs, parameters): the non-fake dims of any consumer's view;
/// * `Constant`: no dims (one element);
/// * unary ops: the dims of their input's buffer;
/// * binary ops and `Contiguous`: the logical dims of their first input's view;
/// * reduces: the same with the reduced axis removed.
pub fn physical_shapes(cx: &Graph) -> PhysShapes {
    let mut phys = PhysShapes::default();
    let order = toposort(&cx.graph, None).expect("luminal graphs are acyclic");
    for n in order {
        let op = cx.graph.node_weight(n).expect("node from toposort");
        let srcs = cx.get_sources(n);
        let dims = match Prim::of(op.as_ref()) {
            Some(Prim::Function) => cx
                .graph
                .edges_directed(n, Direction::Outgoing)
                .filter_map(|e| e.weight().as_data())
                .map(|(_, _, st)| phys_dims(&st))
                .next(),
            Some(Prim::Constant) => Some(vec![]),
            Some(p) if p.is_unary() => phys.get(&srcs[0].0).cloned(),
            Some(Prim::SumReduce(d)) | Some(Prim::MaxReduce(d)) => {
                let mut l = logical_dims(&srcs[0].2);
                l.remove(d);
                Some(l)
            }
            _ => srcs.first().map(|s| logical_dims(&s.2)),
        };
        if let Some(d) = dims {
            phys.insert(n, d);
        }
    }
    phys
}
