//! The fused-kernel node: a [`Program`] evaluated over an iteration space, optionally reduced.

use luminal::prelude::symbolic::Expression;
use rustc_hash::FxHashMap;

use super::ir::{Program, ReduceKind, Stage};
use super::layout::eval;

/// One graph node computing what a whole chain of luminal primitives computed.
///
/// Input `i` is read through the view on the node's `i`-th incoming edge; every view has the
/// rank of `dims`. The output is contiguous over `dims`, without the reduced axis if any.
#[derive(Clone)]
pub struct FusedOp {
    pub program: Program,
    /// Row reductions computed before `program`, over the innermost axis (per point of the
    /// reduced axis when the kernel reduces an outer one).
    pub stages: Vec<Stage>,
    /// The iteration space.
    pub dims: Vec<Expression>,
    /// Reduce this axis of the iteration space with this operation.
    pub reduce: Option<(usize, ReduceKind)>,
    /// What input `i` reads outside its view's valid range (0, or -inf for a max reduction
    /// over a padded input, matching luminal, which skips invalid positions there).
    pub fills: Vec<f32>,
    /// The primitives this kernel replaced, for debugging and pass summaries.
    pub label: String,
    /// The graph's dynamic dims (the graph is boxed and outlives its ops, as for luminal's
    /// `Constant`).
    pub dyn_map: *const FxHashMap<char, usize>,
}

impl PartialEq for FusedOp {
    fn eq(&self, other: &Self) -> bool {
        self.program == other.program
            && self.dims == other.dims
            && self.reduce == other.reduce
            && self.fills == other.fills
    }
}

impl std::fmt::Debug for FusedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fused[{}]", self.label)
    }
}

impl FusedOp {
    /// Concrete iteration dims.
    pub fn resolve_dims(&self, dyn_map: &FxHashMap<char, usize>) -> crate::Result<Vec<usize>> {
        self.dims.iter().map(|d| eval(*d, dyn_map).map(|v| v as usize)).collect()
    }

    /// Symbolic output dims.
    pub fn out_dims(&self) -> Vec<Expression> {
        let mut d = self.dims.clone();
        if let Some((a, _)) = self.reduce {
            d.remove(a);
        }
        d
    }
}
