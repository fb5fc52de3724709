//! Views resolved to strides: what a kernel needs to address a buffer.
//!
//! A luminal `ShapeTracker` describes a view symbolically. Once the dynamic dims are known, a
//! view of rank `r` is `r` axes, each with a length, a stride into the buffer (0 for broadcast
//! axes) and a valid range (outside it the view reads zero: padding, or sliced-away data),
//! plus a base offset. No index expression is ever evaluated per element.
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::graph::view::is_unbounded;

/// One logical axis of a resolved view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    /// Logical length.
    pub len: usize,
    /// Buffer stride of one step along this axis (0 when broadcast).
    pub stride: isize,
    /// Positions `lo..hi` read the buffer; others read zero.
    pub lo: usize,
    pub hi: usize,
}

impl Axis {
    /// Every position reads the buffer.
    pub fn is_full(&self) -> bool {
        self.lo == 0 && self.hi == self.len
    }
}

/// A view resolved against concrete dims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub axes: Vec<Axis>,
    /// Buffer index of logical position 0 (may lie outside the buffer when padded).
    pub offset: isize,
}

/// Evaluate an expression with the dynamic dims known now.
pub fn eval(e: Expression, dyn_map: &FxHashMap<char, usize>) -> Result<i64> {
    if is_unbounded(e) {
        return Ok(i32::MAX as i64);
    }
    e.exec(dyn_map)
        .map(|v| v as i64)
        .ok_or_else(|| Error::Backend(format!("dimension {e:?} depends on an unset dynamic dim")))
}

impl Layout {
    /// Resolve a tracker.
    pub fn of(st: &ShapeTracker, dyn_map: &FxHashMap<char, usize>) -> Result<Layout> {
        let n = st.len();
        let mut dims = Vec::with_capacity(n);
        for p in 0..n {
            dims.push(eval(st.dims[p], dyn_map)?);
        }
        // Strides of the physical dims, fake dims taking no room.
        let mut pstride = vec![0i64; n];
        let mut acc = 1i64;
        for p in (0..n).rev() {
            if !st.fake[p] {
                pstride[p] = acc;
                acc *= dims[p];
            }
        }
        let mut axes = Vec::with_capacity(n);
        let mut offset = 0i64;
        for i in 0..n {
            let p = st.indexes[i];
            let d = dims[p];
            let (p0, p1) = (eval(st.padding[p].0, dyn_map)?, eval(st.padding[p].1, dyn_map)?);
            let (s0, s1) = (eval(st.slices[p].0, dyn_map)?, eval(st.slices[p].1, dyn_map)?);
            let len = (d + p0 + p1).min(s1) - s0;
            let stride = if st.fake[p] { 0 } else { pstride[p] };
            // logical j reads physical k = j + s0 - p0 when 0 <= k < d
            let lo = (p0 - s0).clamp(0, len.max(0));
            let hi = (d + p0 - s0).clamp(lo, len.max(0));
            offset += (s0 - p0) * stride;
            axes.push(Axis { len: len.max(0) as usize, stride: stride as isize, lo: lo as usize, hi: hi as usize });
        }
        Ok(Layout { axes, offset: offset as isize })
    }

    /// A contiguous row-major layout over `dims`.
    pub fn contiguous(dims: &[usize]) -> Layout {
        let mut axes = vec![Axis { len: 0, stride: 0, lo: 0, hi: 0 }; dims.len()];
        let mut acc = 1isize;
        for i in (0..dims.len()).rev() {
            axes[i] = Axis { len: dims[i], stride: acc, lo: 0, hi: dims[i] };
            acc *= dims[i] as isize;
        }
        Layout { axes, offset: 0 }
    }

    /// Logical dims.
    pub fn dims(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.len).collect()
    }

    /// Number of logical elements.
    pub fn n_elements(&self) -> usize {
        self.axes.iter().map(|a| a.len).product()
    }

    /// Every position reads the buffer.
    pub fn is_full(&self) -> bool {
        self.axes.iter().all(Axis::is_full)
    }

    /// Row-major over its dims from element 0, every position valid: the buffer as it lies.
    pub fn is_dense(&self) -> bool {
        *self == Layout::contiguous(&self.dims())
    }

    /// One past the largest buffer index a valid position reads (0 if none is valid).
    pub fn extent(&self) -> usize {
        if self.axes.iter().any(|a| a.lo >= a.hi) {
            return 0;
        }
        let mut hi = self.offset;
        for a in &self.axes {
            let first = a.lo as isize * a.stride;
            let last = (a.hi as isize - 1) * a.stride;
            hi += first.max(last);
        }
        (hi + 1).max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::view::exprs;

    #[test]
    fn permuted_broadcast_and_padded() {
        let map = FxHashMap::default();
        let mut st = ShapeTracker::new(&exprs(&[2, 3]));
        st.permute(&[1, 0]);
        st.expand(0, 4.into());
        let l = Layout::of(&st, &map).unwrap();
        assert_eq!(l.dims(), vec![4, 3, 2]);
        assert_eq!(l.axes.iter().map(|a| a.stride).collect::<Vec<_>>(), vec![0, 1, 3]);

        let mut st = ShapeTracker::new(&exprs(&[3]));
        st.pad(&[(2.into(), 1.into())]);
        let l = Layout::of(&st, &map).unwrap();
        assert_eq!((l.axes[0].len, l.axes[0].lo, l.axes[0].hi, l.offset), (6, 2, 5, -2));
        assert_eq!(l.extent(), 3);
    }

    #[test]
    fn interior_slice_offsets() {
        let map = FxHashMap::default();
        let mut st = ShapeTracker::new(&exprs(&[4, 5]));
        st.slice(&[(1.into(), 3.into()), (2.into(), 4.into())]);
        let l = Layout::of(&st, &map).unwrap();
        assert_eq!(l.dims(), vec![2, 2]);
        assert_eq!(l.offset, 5 + 2);
        assert!(l.is_full());
    }
}
