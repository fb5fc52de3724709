//! `AllReduce`: a graph node whose value is its input summed over the ranks of the run.
//!
//! ```text
//!   grad (this rank's batch) ──► AllReduce × 1/world ──► clip, AdamW    (every rank: the same bits)
//!   Σ_rows teacher           ──► AllReduce ──► / global rows ──► center EMA
//! ```
//!
//! It is not a luminal primitive: autograd never differentiates through it (it is built after
//! the backward pass, or on values no gradient flows through), the fusion pass leaves it as a
//! kernel boundary, CSE leaves it alone, and the planner makes it a collective step
//! ([`crate::backend::plan::Work::AllReduce`]) that the executor runs with its process group,
//! in buckets. Run by luminal's own interpreter (one process, nothing to add), it copies.
use luminal::op::{Contiguous, InputTensor, Operator};
use luminal::prelude::*;

use crate::graph::ops::{materialize, op1};
use crate::graph::View;

/// `scale` times the sum over the ranks of the input (see the module documentation). `name`
/// says what is reduced, for profiles and timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct AllReduce {
    pub name: String,
    /// Applied to the sum as it is unpacked (`1 / world`: the mean, with no kernel of its own).
    pub scale: f32,
}

impl Operator for AllReduce {
    /// One process: the sum over one rank is the input.
    fn process(&mut self, inp: Vec<(InputTensor, ShapeTracker)>) -> Vec<Tensor> {
        let mut out = Contiguous.process(inp);
        if let Some(v) = out[0].data.as_any_mut().downcast_mut::<Vec<f32>>() {
            v.iter_mut().for_each(|x| *x *= self.scale);
        }
        out
    }
}

/// `scale` times `a` summed over the ranks, a contiguous view (the input is materialized
/// first if it is not one).
pub fn all_reduce(cx: &mut Graph, a: View, name: &str, scale: f32) -> View {
    let a = materialize(cx, a);
    let d = a.dims();
    View::contiguous(op1(cx, AllReduce { name: name.to_string(), scale }, a), &d)
}

/// [`all_reduce`] of a typed tensor, unscaled.
pub fn all_reduce_tensor<S: Shape>(x: GraphTensor<S>, name: &str) -> GraphTensor<S> {
    let v = all_reduce(x.graph(), View { id: x.id, st: x.shape }, name, 1.0);
    GraphTensor::from_id(v.id, x.shape.contiguous(), x.graph_ref)
}
