//! Candidate execution orders; the runtime keeps the one whose planned arena is smallest.
//!
//! The order decides how long each intermediate lives, hence peak memory: a training step
//! holds every forward activation until the backward pass reads it, and a poor order keeps
//! far more than that alive. No single heuristic wins on every graph, and planning an arena
//! is cheap, so several orders are planned and the best is kept.
use luminal::prelude::petgraph::{algo::toposort, visit::EdgeRef, Direction};
use luminal::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::backend::fused::FusedOp;
use crate::backend::gemm::GemmOp;
use crate::backend::layout::eval;
use crate::graph::view::logical_dims;

/// The names of the candidate orders ([`candidates`]), as plans record them.
pub const ORDER_NAMES: [&str; 4] = ["greedy-memory", "depth-first", "depth-first-reversed", "topological"];

/// Candidate orders of every node of the graph (each a topological order).
pub fn candidates(cx: &Graph) -> Vec<(&'static str, Vec<NodeIndex>)> {
    let topo = toposort(&cx.graph, None).expect("luminal graphs are acyclic");
    let sinks: Vec<NodeIndex> = topo
        .iter()
        .copied()
        .filter(|n| cx.no_delete.contains(n) || cx.graph.edges_directed(*n, Direction::Outgoing).next().is_none())
        .collect();
    let mut rev = sinks.clone();
    rev.reverse();
    let orders = vec![
        (ORDER_NAMES[0], greedy(cx, &topo)),
        (ORDER_NAMES[1], depth_first(cx, &sinks)),
        (ORDER_NAMES[2], depth_first(cx, &rev)),
        (ORDER_NAMES[3], topo),
    ];
    let downstream = after_collectives(cx);
    if downstream.is_empty() {
        return orders;
    }
    orders.into_iter().map(|(name, o)| (name, defer(o, &downstream))).collect()
}

/// Every node that reads (directly or not) the output of an all-reduce.
fn after_collectives(cx: &Graph) -> FxHashSet<NodeIndex> {
    let mut seen: FxHashSet<NodeIndex> = FxHashSet::default();
    let mut stack: Vec<NodeIndex> = cx
        .graph
        .node_indices()
        .filter(|&n| cx.graph.node_weight(n).is_some_and(|op| op.as_any().is::<crate::dist::AllReduce>()))
        .flat_map(|n| cx.graph.edges_directed(n, Direction::Outgoing).map(|e| e.target()).collect::<Vec<_>>())
        .collect();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(cx.graph.edges_directed(n, Direction::Outgoing).map(|e| e.target()));
        }
    }
    seen
}

/// `order` with the nodes of `later` moved to the end, each part in its own order (still
/// topological: nothing outside `later` reads a node in it). For a data-parallel step this
/// runs every all-reduce (the whole backward pass) before the first reader of one (the
/// optimizer), so the all-reduces form a few large buckets (`collective.rs`) instead of one
/// per gradient, as DDP's are; the gradients then live until the update, as `.grad` does.
fn defer(order: Vec<NodeIndex>, later: &FxHashSet<NodeIndex>) -> Vec<NodeIndex> {
    let (mut now, after): (Vec<NodeIndex>, Vec<NodeIndex>) = order.into_iter().partition(|n| !later.contains(n));
    now.extend(after);
    now
}

/// Post-order of a depth-first walk from each sink in turn: a node runs right before its
/// first consumer needs it.
fn depth_first(cx: &Graph, sinks: &[NodeIndex]) -> Vec<NodeIndex> {
    let mut done: FxHashSet<NodeIndex> = FxHashSet::default();
    let mut order = Vec::with_capacity(cx.graph.node_count());
    for &s in sinks {
        let mut stack = vec![(s, false)];
        while let Some((n, expanded)) = stack.pop() {
            if done.contains(&n) {
                continue;
            }
            if expanded {
                done.insert(n);
                order.push(n);
                continue;
            }
            stack.push((n, true));
            let srcs = cx.get_sources(n);
            for (src, _, _) in srcs.iter().rev() {
                if !done.contains(src) {
                    stack.push((*src, false));
                }
            }
        }
    }
    // anything unreachable from a sink (kept nodes are sinks, so only dead inputs)
    for n in cx.graph.node_indices() {
        if !done.contains(&n) {
            order.push(n);
        }
    }
    order
}

/// Elements of a node's output, if known.
fn size_of(cx: &Graph, n: NodeIndex) -> usize {
    let op = cx.graph.node_weight(n).expect("node").as_any();
    let dm = &cx.dyn_map;
    let resolve = |d: &[luminal::prelude::symbolic::Expression]| -> usize {
        d.iter().map(|e| eval(*e, dm).unwrap_or(1) as usize).product::<usize>().max(1)
    };
    if let Some(f) = op.downcast_ref::<FusedOp>() {
        return resolve(&f.out_dims());
    }
    if let Some(g) = op.downcast_ref::<GemmOp>() {
        return resolve(&g.out_dims(&cx.get_sources(n)[0].2));
    }
    cx.get_sources(n).first().map(|s| resolve(&logical_dims(&s.2))).unwrap_or(1)
}

/// List scheduling that always runs, among the ready nodes, the one that frees the most
/// memory net of what it allocates (ties: earliest in topological order).
fn greedy(cx: &Graph, topo: &[NodeIndex]) -> Vec<NodeIndex> {
    let rank: FxHashMap<NodeIndex, usize> = topo.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut waiting: FxHashMap<NodeIndex, usize> = FxHashMap::default(); // unscheduled sources
    let mut readers: FxHashMap<NodeIndex, usize> = FxHashMap::default(); // unscheduled consumers
    let mut size: FxHashMap<NodeIndex, usize> = FxHashMap::default();
    for &n in topo {
        waiting.insert(n, cx.get_sources(n).len());
        readers.insert(
            n,
            cx.graph.edges_directed(n, Direction::Outgoing).filter(|e| e.weight().as_data().is_some()).count(),
        );
        size.insert(n, size_of(cx, n));
    }
    let persistent = |n: NodeIndex| cx.no_delete.contains(&n) || cx.get_sources(n).is_empty();
    let mut ready: Vec<NodeIndex> = topo.iter().copied().filter(|n| waiting[n] == 0).collect();
    let mut order = Vec::with_capacity(topo.len());
    while !ready.is_empty() {
        let score = |n: NodeIndex| -> (i64, std::cmp::Reverse<usize>) {
            // sources whose last reader this is: count edges from each source to n
            let mut from: FxHashMap<NodeIndex, usize> = FxHashMap::default();
            for (s, _, _) in cx.get_sources(n) {
                *from.entry(s).or_default() += 1;
            }
            let freed: usize =
                from.iter().filter(|(s, c)| readers[*s] == **c && !persistent(**s)).map(|(s, _)| size[s]).sum();
            let alloc = if persistent(n) && cx.get_sources(n).is_empty() { 0 } else { size[&n] };
            (freed as i64 - alloc as i64, std::cmp::Reverse(rank[&n]))
        };
        let (i, _) = ready.iter().enumerate().max_by_key(|(_, n)| score(**n)).expect("non-empty");
        let n = ready.swap_remove(i);
        order.push(n);
        for (s, _, _) in cx.get_sources(n) {
            *readers.get_mut(&s).expect("known") -= 1;
        }
        for e in cx.graph.edges_directed(n, Direction::Outgoing) {
            let t = e.target();
            let w = waiting.get_mut(&t).expect("known");
            *w -= 1;
            if *w == 0 {
                ready.push(t);
            }
        }
    }
    order
}
