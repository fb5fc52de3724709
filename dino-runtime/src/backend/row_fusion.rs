//! Row fusion: a reduction over the innermost axis moves into the kernels that read it
//! broadcast back along that axis, as a *stage* computed per row.
//!
//! ```text
//!   x ──▶ Fused[Sum@last] ──(broadcast over the row)──▶ Fused[x - mean ...]
//!   becomes
//!   x ──▶ Fused[stage0 = Sum(x) over the row; x - stage0 ...]
//! ```
//!
//! LayerNorm (mean, variance, normalize) and softmax (max, sum, divide), forward and backward,
//! each become one kernel that reads its input once, instead of two or three kernels with
//! the input read each time. A reduction is absorbed only when every consumer can take it
//! (a fused kernel reading it broadcast along its innermost axis), then it is recomputed in
//! each of them.
use luminal::prelude::petgraph::{algo::toposort, visit::EdgeRef, Direction};
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;
use rustc_hash::FxHashMap;

use super::fused::FusedOp;
use super::fusion::compose;
use super::ir::{Instr, Stage};
use crate::graph::view::phys_dims;

/// Rows longer than this are not worth re-reading per stage.
const MAX_ROW: usize = 16384;
/// At most this many inputs a consumer must newly read to absorb a reduction.
const MAX_NEW_INPUTS: usize = 1;

/// The row-fusion pass. See the module documentation.
#[derive(Debug, Default)]
pub struct RowFusionPass;

fn fused(cx: &Graph, n: NodeIndex) -> Option<&FusedOp> {
    cx.graph.node_weight(n)?.as_any().downcast_ref::<FusedOp>()
}

/// The view of R's iteration space from a consumer's iteration space, given the consumer's
/// view `w` of R's output (`None` if `w` is not a broadcast of R along the consumer's
/// innermost axis).
fn into_reduction_space(w: &ShapeTracker, r: &FusedOp, axis: usize) -> Option<ShapeTracker> {
    let n = w.len();
    let last = n.checked_sub(1)?;
    if w.is_sliced() || w.is_padded() || phys_dims(w) != r.out_dims() {
        return None;
    }
    let p_last = w.indexes[last];
    if !w.fake[p_last] || w.dims[p_last] != r.dims[axis] {
        return None;
    }
    // physical dims: R's iteration dims, then the consumer's other broadcast axes
    let mut dims: Vec<Expression> = r.dims.clone();
    let mut phys_of = vec![0usize; n];
    let rank = |p: usize| (0..p).filter(|&q| !w.fake[q]).count();
    for i in 0..n {
        let p = w.indexes[i];
        phys_of[i] = if i == last {
            axis
        } else if w.fake[p] {
            dims.push(w.dims[p]);
            dims.len() - 1
        } else {
            let q = rank(p);
            if q < axis {
                q
            } else {
                q + 1
            }
        };
    }
    let mut st = ShapeTracker::new(&dims);
    for (i, p) in phys_of.iter().enumerate() {
        st.indexes[i] = *p;
    }
    for p in r.dims.len()..dims.len() {
        st.fake[p] = true;
    }
    Some(st)
}

/// Can `k` host stages: every kernel can, as long as it has an innermost axis.
fn hosts_stages(k: &FusedOp) -> bool {
    !k.dims.is_empty()
}

impl Compiler for RowFusionPass {
    fn compile<T: ToIdsMut>(&self, cx: &mut Graph, mut remap: T) {
        let order = toposort(&cx.graph, None).expect("luminal graphs are acyclic");
        // consumers get rebuilt as they absorb reductions: follow them to their new nodes
        let mut renamed: FxHashMap<NodeIndex, NodeIndex> = FxHashMap::default();
        for mut r_node in order {
            while let Some(&n) = renamed.get(&r_node) {
                r_node = n;
            }
            let Some(r) = fused(cx, r_node).cloned() else { continue };
            let Some((axis, kind)) = r.reduce else { continue };
            if !r.stages.is_empty() && axis + 1 != r.dims.len() {
                continue; // its own stages run along its last axis, not the reduced one
            }
            if cx.no_delete.contains(&r_node) || cx.to_retrieve.contains(&r_node) {
                continue;
            }
            let row = r.dims[axis].to_usize();
            if row.map(|l| l > MAX_ROW || l < 2).unwrap_or(true) {
                continue;
            }
            let r_inputs = cx.get_sources(r_node);
            let edges: Vec<(NodeIndex, u8, ShapeTracker)> = cx
                .graph
                .edges_directed(r_node, Direction::Outgoing)
                .filter_map(|e| e.weight().as_data().map(|(i, _, st)| (e.target(), i, st)))
                .collect();
            if edges.is_empty() {
                continue;
            }
            // every consumer must take it
            let plans: Option<Vec<ShapeTracker>> = edges
                .iter()
                .map(|(k, _, w)| {
                    let kop = fused(cx, *k).filter(|k| hosts_stages(k))?;
                    let into = into_reduction_space(w, &r, axis)?;
                    let k_inputs = cx.get_sources(*k);
                    let new = r_inputs
                        .iter()
                        .filter(|(s, _, v)| {
                            let c = compose(*v, &into);
                            !k_inputs.iter().any(|(ks, _, kv)| ks == s && *kv == c)
                        })
                        .count();
                    (new <= MAX_NEW_INPUTS && kop.dims.last().and_then(|d| d.to_usize()) == row).then_some(into)
                })
                .collect();
            let Some(plans) = plans else { continue };
            // absorb into each consumer edge (a consumer may read R through several edges)
            let mut consumers: Vec<NodeIndex> = edges.iter().map(|e| e.0).collect();
            consumers.dedup();
            for k_node in consumers {
                let mut k = fused(cx, k_node).expect("checked").clone();
                let mut inputs: Vec<(NodeIndex, u8, ShapeTracker)> = cx.get_sources(k_node);
                let mut fills = k.fills.clone();
                // stage index of each edge from R into this consumer
                let mut stage_of_input: Vec<Option<u16>> = vec![None; inputs.len()];
                for ((target, input_order, _), into) in edges.iter().zip(&plans) {
                    if *target != k_node {
                        continue;
                    }
                    // R's inputs, composed into k's space
                    let map: Vec<u16> = r_inputs
                        .iter()
                        .zip(&r.fills)
                        .map(|((s, o, v), fill)| {
                            let c = compose(*v, into);
                            match inputs.iter().position(|(ks, ko, kv)| ks == s && ko == o && *kv == c) {
                                Some(i) => i as u16,
                                None => {
                                    inputs.push((*s, *o, c));
                                    fills.push(*fill);
                                    stage_of_input.push(None);
                                    (inputs.len() - 1) as u16
                                }
                            }
                        })
                        .collect();
                    let base = k.stages.len() as u16;
                    let mut new_stages: Vec<Stage> = r
                        .stages
                        .iter()
                        .map(|st| Stage {
                            program: st.program.remap(|i| Instr::Load(map[i as usize]), |s| base + s),
                            kind: st.kind,
                        })
                        .collect();
                    new_stages
                        .push(Stage { program: r.program.remap(|i| Instr::Load(map[i as usize]), |s| base + s), kind });
                    // share identical stages
                    let mut index = vec![0u16; new_stages.len()];
                    for (j, st) in new_stages.into_iter().enumerate() {
                        let done = index.clone();
                        let program =
                            st.program.remap(Instr::Load, |s| if s >= base { done[(s - base) as usize] } else { s });
                        let st = Stage { program, kind: st.kind };
                        index[j] = match k.stages.iter().position(|e| *e == st) {
                            Some(e) => e as u16,
                            None => {
                                k.stages.push(st);
                                (k.stages.len() - 1) as u16
                            }
                        };
                    }
                    stage_of_input[*input_order as usize] = Some(index[index.len() - 1]);
                }
                // loads of R become stage reads; drop R's edges and renumber the inputs
                let keep: Vec<usize> = (0..inputs.len()).filter(|&i| stage_of_input[i].is_none()).collect();
                let mut new_index = vec![0u16; inputs.len()];
                for (n, &i) in keep.iter().enumerate() {
                    new_index[i] = n as u16;
                }
                let rewrite = |i: u16| match stage_of_input[i as usize] {
                    Some(s) => Instr::Stage(s),
                    None => Instr::Load(new_index[i as usize]),
                };
                k.program = k.program.remap(rewrite, |s| s);
                k.stages = k
                    .stages
                    .iter()
                    .map(|st| Stage { program: st.program.remap(rewrite, |s| s), kind: st.kind })
                    .collect();
                k.fills = keep.iter().map(|&i| fills[i]).collect();
                k.label = format!("{}+rows({})", k.label, r.label);
                let mut b = cx.add_op(k);
                for &i in &keep {
                    let (s, o, v) = inputs[i];
                    b = b.input(s, o, v);
                }
                let new = b.finish();
                move_outgoing_edge(k_node, new, &mut cx.graph);
                move_references(&mut remap, &mut cx.no_delete, &mut cx.to_retrieve, k_node, new);
                cx.graph.remove_node(k_node);
                renamed.insert(k_node, new);
            }
            cx.graph.remove_node(r_node);
        }
    }
}
