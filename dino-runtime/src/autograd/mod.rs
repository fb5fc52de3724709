//! Reverse-mode automatic differentiation as a graph pass over luminal primitives.
//!
//! [`backward`] appends the backward graph of a scalar loss to the same luminal graph, so one
//! execution computes the loss, every requested gradient and (with `optim`) the update. It runs
//! on the *primitive* graph, before any backend pass: the rules are one table over luminal's
//! primitives (`rules.rs`), plus the inversion of edge views (`unview.rs`).
//!
//! Gradients are kept in buffer space: `grad[n]` has the dims of the buffer node `n`
//! produces. Contributions reaching a buffer through a reshaped view arrive with another
//! factorization of the same element order and are re-wrapped before being summed.
mod prim;
mod rules;
mod shapes;
#[cfg(test)]
mod tests;
mod unview;

pub use prim::Prim;
pub use shapes::{physical_shapes, PhysShapes};
pub use unview::unview;

use luminal::prelude::petgraph::{algo::toposort, visit::EdgeRef, Direction};
use luminal::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::{Error, Result};
use crate::graph::ops::{add, constant, materialize};
use crate::graph::View;
use rules::Space;

/// Append the gradient of the 1-element `loss` with respect to each node of `wrt` (parameters
/// or inputs) to the graph. Returns one contiguous view per node, with that node's buffer
/// dims; a node the loss does not depend on gets zeros.
pub fn backward(cx: &mut Graph, loss: NodeIndex, wrt: &[NodeIndex]) -> Result<Vec<View>> {
    let phys = physical_shapes(cx);
    let loss_dims = phys.get(&loss).cloned().unwrap_or_default();
    if loss_dims.iter().any(|d| d.to_usize() != Some(1)) {
        return Err(Error::LossNotScalar { dims: format!("{loss_dims:?}") });
    }

    // Nodes on a path from some `wrt` node to the loss, in reverse topological order.
    let from_wrt = reachable(cx, wrt, Direction::Outgoing);
    let to_loss = reachable(cx, &[loss], Direction::Incoming);
    let order: Vec<NodeIndex> = toposort(&cx.graph, None)
        .expect("luminal graphs are acyclic")
        .into_iter()
        .filter(|n| from_wrt.contains(n) && to_loss.contains(n))
        .collect();
    let on_path: FxHashSet<NodeIndex> = order.iter().copied().collect();

    let mut grads: FxHashMap<NodeIndex, View> = FxHashMap::default();
    if on_path.contains(&loss) {
        grads.insert(loss, constant(cx, 1.0, &loss_dims));
    }
    for &n in order.iter().rev() {
        let Some(g) = grads.get(&n).copied() else {
            continue;
        };
        let op = cx.graph.node_weight(n).expect("node in order");
        let prim = Prim::of(op.as_ref()).ok_or_else(|| Error::NotPrimitive { op: format!("{op:?}") })?;
        if prim.is_leaf() {
            continue;
        }
        let srcs = cx.get_sources(n);
        let inputs: Vec<View> = srcs.iter().map(|(id, _, st)| View { id: *id, st: *st }).collect();
        let want: Vec<bool> = srcs.iter().map(|(id, _, _)| on_path.contains(id)).collect();
        let phys_in0 = srcs.first().and_then(|s| phys.get(&s.0)).cloned();
        for (i, c, space) in rules::contributions(cx, prim, n, g, &inputs, &want, phys_in0.as_deref()) {
            let c = match space {
                Space::Logical => unview(cx, c, &srcs[i].2),
                Space::Buffer => c,
            };
            accumulate(cx, &mut grads, &phys, srcs[i].0, c);
        }
    }

    wrt.iter()
        .map(|w| {
            let dims = phys.get(w).ok_or_else(|| Error::UnknownShape { name: node_name(cx, *w) })?;
            let g = grads.get(w).copied().unwrap_or_else(|| constant(cx, 0.0, dims));
            Ok(materialize(cx, g))
        })
        .collect()
}

/// Add a contribution (logical dims: some factorization of the buffer's) to `grads[src]`.
fn accumulate(cx: &mut Graph, grads: &mut FxHashMap<NodeIndex, View>, phys: &PhysShapes, src: NodeIndex, mut c: View) {
    let want = &phys[&src];
    if &c.dims() != want {
        c = materialize(cx, c).reshaped(want);
    }
    let sum = match grads.get(&src) {
        Some(old) => add(cx, *old, c),
        None => c,
    };
    grads.insert(src, sum);
}

/// Nodes reachable from `start` along data edges in direction `dir` (including `start`).
fn reachable(cx: &Graph, start: &[NodeIndex], dir: Direction) -> FxHashSet<NodeIndex> {
    let mut seen = FxHashSet::default();
    let mut stack = start.to_vec();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            for e in cx.graph.edges_directed(n, dir).filter(|e| !e.weight().is_schedule()) {
                stack.push(if dir == Direction::Incoming { e.source() } else { e.target() });
            }
        }
    }
    seen
}

/// A node's display name (the `Function` name for inputs and parameters).
pub fn node_name(cx: &Graph, n: NodeIndex) -> String {
    cx.graph.node_weight(n).map(|o| format!("{o:?}")).unwrap_or_else(|| format!("{n:?}"))
}
