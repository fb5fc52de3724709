//! Views: a node's output buffer seen through a luminal `ShapeTracker`.
//!
//! In luminal 0.2.0 the view lives on the edge, not on the node: a consumer reads its
//! producer's buffer through the tracker stored on the connecting edge. A `View` is that pair,
//! detached from any edge, so graph-building code (autograd, optimizers, passes) can carry it
//! around before it becomes an edge.
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;

/// A node's output buffer seen through a view.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub id: NodeIndex,
    pub st: ShapeTracker,
}

/// Is this expression the "no upper bound" marker luminal uses for unset slice ends?
pub fn is_unbounded(e: Expression) -> bool {
    e.to_usize().map(|n| n as i32 == i32::MAX).unwrap_or(false)
}

/// Logical length of one *physical* dim `p` of a tracker: `min(d + p0 + p1, s1) - s0`.
///
/// This is the correct formula; luminal's own `ShapeTracker::shape()` gets interior slices
/// wrong (start > 0 and end < dim), see notes/luminal-0.2.md bug 4.
pub fn physical_axis_len(st: &ShapeTracker, p: usize) -> Expression {
    let (p0, p1) = st.padding[p];
    let (s0, s1) = st.slices[p];
    let padded = st.dims[p] + p0 + p1;
    let end = if is_unbounded(s1) { padded } else { padded.min(s1) };
    end - s0
}

/// Logical dims of a view, in logical order.
pub fn logical_dims(st: &ShapeTracker) -> Vec<Expression> {
    (0..st.len()).map(|i| physical_axis_len(st, st.indexes[i])).collect()
}

/// Dims of the buffer under a view: physical order, expanded (fake) dims removed.
pub fn phys_dims(st: &ShapeTracker) -> Vec<Expression> {
    (0..st.len()).filter(|&p| !st.fake[p]).map(|p| st.dims[p]).collect()
}

/// A view that reads its buffer as-is: no permutation, broadcast, slice or padding.
pub fn is_plain(st: &ShapeTracker) -> bool {
    st.is_contiguous() && !st.is_sliced() && !st.is_padded()
}

/// Expressions from concrete sizes.
pub fn exprs(dims: &[usize]) -> Vec<Expression> {
    dims.iter().map(|&d| Expression::from(d)).collect()
}

/// Concrete sizes of expressions, if none is symbolic.
pub fn concrete(dims: &[Expression]) -> Option<Vec<usize>> {
    dims.iter().map(|d| d.to_usize()).collect()
}

impl View {
    /// A plain contiguous view of a buffer with these dims.
    pub fn contiguous(id: NodeIndex, dims: &[Expression]) -> View {
        View { id, st: ShapeTracker::new(dims) }
    }

    /// A 1-element buffer broadcast to `dims` (every axis fake).
    pub fn broadcast(id: NodeIndex, dims: &[Expression]) -> View {
        View { id, st: ShapeTracker::fake(dims) }
    }

    /// Logical dims of the view.
    pub fn dims(&self) -> Vec<Expression> {
        logical_dims(&self.st)
    }

    /// Insert a broadcast axis of `size` at logical position `axis`.
    pub fn expand(mut self, axis: usize, size: Expression) -> View {
        self.st.expand(axis, size);
        self
    }

    /// Permute logical axes.
    pub fn permute(mut self, axes: &[usize]) -> View {
        self.st.permute(axes);
        self
    }

    /// The same buffer viewed contiguously with other dims of equal element count.
    pub fn reshaped(self, dims: &[Expression]) -> View {
        debug_assert!(is_plain(&self.st), "reshape of a non-plain view");
        View::contiguous(self.id, dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interior_slice_length_is_end_minus_start() {
        let mut st = ShapeTracker::new(&exprs(&[6]));
        st.slice(&[(1.into(), 4.into())]);
        assert_eq!(logical_dims(&st)[0].to_usize(), Some(3));
    }

    #[test]
    fn padding_adds_to_length_and_permute_reorders() {
        let mut st = ShapeTracker::new(&exprs(&[2, 3]));
        st.pad(&[(0.into(), 0.into()), (1.into(), 2.into())]);
        st.permute(&[1, 0]);
        let d = concrete(&logical_dims(&st)).unwrap();
        assert_eq!(d, vec![6, 2]);
        assert_eq!(concrete(&phys_dims(&st)).unwrap(), vec![2, 3]);
    }
}
