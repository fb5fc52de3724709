//! Graph clean-up before kernel selection: dead-node removal and common subexpressions.
use luminal::prelude::petgraph::{algo::toposort, visit::EdgeRef, Direction};
use luminal::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::autograd::Prim;

/// Common-subexpression elimination in one topological pass: two primitives of the same kind
/// reading the same outputs through the same views are one. Inputs (`Function`) are never
/// merged, nor two kept nodes (each handle must keep its own slot).
///
/// luminal's own `CSE` rescans the whole graph after every merge (quadratic or worse); this
/// pass hashes each node once.
#[derive(Debug, Default)]
pub struct CsePass;

impl Compiler for CsePass {
    fn compile<T: ToIdsMut>(&self, cx: &mut Graph, mut remap: T) {
        let order = toposort(&cx.graph, None).expect("luminal graphs are acyclic");
        let mut seen: FxHashMap<String, NodeIndex> = FxHashMap::default();
        for n in order {
            let op = cx.graph.node_weight(n).expect("node");
            match Prim::of(op.as_ref()) {
                None | Some(Prim::Function) => continue,
                Some(_) => {}
            }
            let mut key = format!("{op:?}");
            for (src, out, st) in cx.get_sources(n) {
                key.push_str(&format!("|{}:{out}:{st:?}", src.index()));
            }
            match seen.get(&key) {
                Some(&m) if !(cx.no_delete.contains(&n) && cx.no_delete.contains(&m)) => {
                    move_outgoing_edge(n, m, &mut cx.graph);
                    move_references(&mut remap, &mut cx.no_delete, &mut cx.to_retrieve, n, m);
                    cx.graph.remove_node(n);
                }
                Some(_) => {}
                None => {
                    seen.insert(key, n);
                }
            }
        }
    }
}

/// Remove every node no kept (or retrieved) node depends on. Inputs stay, so handles to them
/// remain valid.
#[derive(Debug, Default)]
pub struct DeadCodePass;

impl Compiler for DeadCodePass {
    fn compile<T: ToIdsMut>(&self, cx: &mut Graph, _: T) {
        let mut live: FxHashSet<NodeIndex> = FxHashSet::default();
        let mut stack: Vec<NodeIndex> = cx.no_delete.iter().chain(cx.to_retrieve.iter()).copied().collect();
        while let Some(n) = stack.pop() {
            if !cx.graph.contains_node(n) || !live.insert(n) {
                continue;
            }
            stack.extend(cx.graph.edges_directed(n, Direction::Incoming).map(|e| e.source()));
        }
        let dead: Vec<NodeIndex> = cx
            .graph
            .node_indices()
            .filter(|n| !live.contains(n))
            .filter(|n| !matches!(Prim::of(cx.graph.node_weight(*n).expect("node").as_ref()), Some(Prim::Function)))
            .collect();
        for n in dead {
            cx.graph.remove_node(n);
        }
    }
}
