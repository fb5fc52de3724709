//! View inversion: carry a gradient from a view back to the buffer under it.
//!
//! A consumer reads its producer's buffer through an edge `ShapeTracker` that may permute,
//! broadcast (expand), slice and pad. The gradient arrives in the consumer's *logical* space;
//! the producer needs it in its *buffer* space. Reshape needs no rule of its own: luminal
//! reshapes only contiguous buffers, so element order is already the buffer's; only the dims'
//! factorization differs, which the accumulator fixes by re-wrapping.
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;

use crate::graph::ops::{materialize, sum_reduce};
use crate::graph::view::{is_plain, is_unbounded, phys_dims, View};

fn is_zero(e: Expression) -> bool {
    e.to_usize() == Some(0)
}

/// Map `g` (logical dims == logical dims of `st`) to a contiguous gradient over the buffer
/// dims of `st` (`phys_dims(st)`), in four steps:
/// 1. broadcast (fake) axes are summed first, so everything after works on the small tensor
///    (a weight gradient is summed over batch and tokens before any pad);
/// 2. slices and pads become pads and slices (one materialization each: luminal cannot pad
///    and slice the same dim in one view);
/// 3. broadcast axes that were themselves padded or sliced are summed after step 2;
/// 4. the permutation is undone.
pub fn unview(cx: &mut Graph, g: View, st: &ShapeTracker) -> View {
    if is_plain(st) {
        return g;
    }
    let mut g = g;
    // the physical axis behind each logical axis of g, as axes get summed away
    let mut axes: Vec<usize> = (0..st.len()).map(|i| st.indexes[i]).collect();
    let cropped = |p: usize| {
        let (p0, p1) = st.padding[p];
        let (s0, s1) = st.slices[p];
        !(is_zero(p0) && is_zero(p1) && is_zero(s0) && is_unbounded(s1))
    };

    // 1. plain broadcast axes -> sum
    for i in (0..axes.len()).rev() {
        if st.fake[axes[i]] && !cropped(axes[i]) {
            g = sum_reduce(cx, g, i);
            axes.remove(i);
        }
    }

    // 2. slice/pad -> pad/slice, per remaining axis i (physical axis p):
    //    grad_buffer[k] = g[k + p0 - s0] where that index is inside g, else 0.
    if axes.iter().any(|&p| cropped(p)) {
        g = materialize(cx, g);
        let len = g.dims();
        let zero = Expression::from(0);
        let n = axes.len();
        let mut pads = vec![(zero, zero); n];
        let mut cuts = vec![(zero, Expression::from(i32::MAX)); n];
        let (mut any_pad, mut any_cut) = (false, false);
        for (i, &p) in axes.iter().enumerate() {
            if !cropped(p) {
                continue;
            }
            let (p0, _) = st.padding[p];
            let (s0, _) = st.slices[p];
            let d = st.dims[p];
            let front_pad = (s0 - p0).max(0);
            let front_cut = (p0 - s0).max(0);
            let have = front_pad + len[i]; // length after the front pad
            let back_pad = (d + front_cut - have).max(0);
            if !is_zero(front_pad) || !is_zero(back_pad) {
                pads[i] = (front_pad, back_pad);
                any_pad = true;
            }
            let end = front_cut + d;
            let total = have + back_pad;
            if !is_zero(front_cut) || end != total {
                cuts[i] = (front_cut, end);
                any_cut = true;
            }
        }
        if any_pad {
            let mut padded = ShapeTracker::new(&g.dims());
            padded.pad(&pads);
            g = materialize(cx, View { id: g.id, st: padded });
        }
        if any_cut {
            let mut cut = ShapeTracker::new(&g.dims());
            cut.slice(&cuts);
            g = materialize(cx, View { id: g.id, st: cut });
        }
    }

    // 3. broadcast axes that were cropped -> sum (now of their full length)
    for i in (0..axes.len()).rev() {
        if st.fake[axes[i]] {
            g = sum_reduce(cx, g, i);
            axes.remove(i);
        }
    }

    // 4. permutation -> inverse permutation (remaining axes back into physical order)
    let mut order = axes.clone();
    order.sort_unstable();
    let perm: Vec<usize> = order.iter().map(|p| axes.iter().position(|r| r == p).expect("axis present")).collect();
    if perm.iter().enumerate().any(|(a, b)| a != *b) {
        g = g.permute(&perm);
    }
    let g = materialize(cx, g);
    debug_assert_eq!(g.dims().len(), phys_dims(st).len());
    g
}
