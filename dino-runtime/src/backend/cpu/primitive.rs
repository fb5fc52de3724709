//! luminal's primitive operators, one at a time, on resolved layouts: what runs a node no pass
//! replaced (the unoptimized graph every pass is compared with, or a pipeline with passes
//! switched off).
//!
//! ```text
//!   Mul(a: view A, b: view B)      luminal: per element, index and valid expressions of A
//!     ──────────────────────►       and B evaluated symbolically (~100 ns an element)
//!                                   here:    per row of the innermost axis, one base index
//!                                            per input, then strides (~1 ns an element)
//! ```
//!
//! Semantics are luminal's own (`luminal::op`): unary operators map the physical buffer (the
//! view passes through to their consumers); a position outside a view's valid range reads 0,
//! except in a max reduction, which skips it (so an all-invalid row gives -inf); binary
//! operators iterate over their first input's shape. Tests compare each primitive
//! with luminal's `process` on permuted, broadcast, sliced and padded views.
use crate::autograd::Prim;
use crate::backend::layout::{Axis, Layout};

/// Scalars are one-element rows.
fn axes_of(l: &Layout) -> Vec<Axis> {
    if l.axes.is_empty() {
        vec![Axis { len: 1, stride: 0, lo: 0, hi: 1 }]
    } else {
        l.axes.clone()
    }
}

/// One input read row by row.
struct Reader<'a> {
    buf: &'a [f32],
    axes: Vec<Axis>,
    offset: isize,
}

impl Reader<'_> {
    /// The buffer index of the row's first element (position 0 of the last axis), or `None`
    /// when the row lies outside the valid range of an outer axis.
    fn row_base(&self, coords: &[usize]) -> Option<isize> {
        let mut base = self.offset;
        for (a, &c) in self.axes.iter().zip(coords) {
            if c < a.lo || c >= a.hi {
                return None;
            }
            base += c as isize * a.stride;
        }
        Some(base)
    }

    /// Element `j` of the row starting at `base`, `None` outside the valid range.
    #[inline]
    fn at(&self, base: Option<isize>, j: usize) -> Option<f32> {
        let last = self.axes.last().expect("at least one axis");
        match base {
            Some(b) if j >= last.lo && j < last.hi => Some(self.buf[(b + j as isize * last.stride) as usize]),
            _ => None,
        }
    }
}

/// Decompose a row number into the coordinates of the outer axes.
fn coords_of(mut row: usize, outer: &[usize], coords: &mut [usize]) {
    for i in (0..outer.len()).rev() {
        coords[i] = row % outer[i];
        row /= outer[i];
    }
}

/// Evaluate `prim` over `srcs` read through `layouts` into `out` (contiguous, its logical
/// shape). Returns false for what is not evaluated here (inputs, constants, `Detach`), which
/// the caller runs as luminal's operator.
pub fn eval(prim: Prim, srcs: &[&[f32]], layouts: &[Layout], out: &mut [f32]) -> bool {
    match prim {
        Prim::SumReduce(d) | Prim::MaxReduce(d) => {
            let max = matches!(prim, Prim::MaxReduce(_));
            let mut axes = axes_of(&layouts[0]);
            if d >= axes.len() {
                return false;
            }
            // the reduced axis last: each output element folds one row
            let r = axes.remove(d);
            axes.push(r);
            let rd = Reader { buf: srcs[0], axes, offset: layouts[0].offset };
            let outer: Vec<usize> = rd.axes[..rd.axes.len() - 1].iter().map(|a| a.len).collect();
            let n: usize = outer.iter().product();
            let mut coords = vec![0; outer.len()];
            for (row, o) in out.iter_mut().enumerate().take(n) {
                coords_of(row, &outer, &mut coords);
                let base = rd.row_base(&coords);
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                if base.is_some() {
                    for j in 0..r.len {
                        if let Some(v) = rd.at(base, j) {
                            acc = if max { acc.max(v) } else { acc + v };
                        }
                    }
                }
                *o = acc;
            }
            true
        }
        Prim::Contiguous => {
            let a = Reader { buf: srcs[0], axes: axes_of(&layouts[0]), offset: layouts[0].offset };
            rows(&a.axes, out, |coords, row| {
                let base = a.row_base(coords);
                for (j, o) in row.iter_mut().enumerate() {
                    *o = a.at(base, j).unwrap_or(0.0);
                }
            });
            true
        }
        // luminal's unary operators map the physical buffer; the view passes through
        Prim::Log2 | Prim::Exp2 | Prim::Sin | Prim::Sqrt | Prim::Recip => {
            let f: fn(f32) -> f32 = match prim {
                Prim::Log2 => f32::log2,
                Prim::Exp2 => f32::exp2,
                Prim::Sin => f32::sin,
                Prim::Sqrt => f32::sqrt,
                _ => f32::recip,
            };
            for (o, x) in out.iter_mut().zip(srcs[0]) {
                *o = f(*x);
            }
            true
        }
        Prim::Add | Prim::Mul | Prim::Mod | Prim::LessThan => {
            let f: fn(f32, f32) -> f32 = match prim {
                Prim::Add => |x, y| x + y,
                Prim::Mul => |x, y| x * y,
                Prim::Mod => |x, y| x % y,
                _ => |x, y| if x < y { 1.0 } else { 0.0 },
            };
            let a = Reader { buf: srcs[0], axes: axes_of(&layouts[0]), offset: layouts[0].offset };
            let b = Reader { buf: srcs[1], axes: axes_of(&layouts[1]), offset: layouts[1].offset };
            if a.axes.len() != b.axes.len() {
                return false;
            }
            rows(&a.axes, out, |coords, row| {
                let (ba, bb) = (a.row_base(coords), b.row_base(coords));
                for (j, o) in row.iter_mut().enumerate() {
                    *o = f(a.at(ba, j).unwrap_or(0.0), b.at(bb, j).unwrap_or(0.0));
                }
            });
            true
        }
        Prim::Function | Prim::Constant | Prim::Detach => false,
    }
}

/// Call `f(outer coordinates, output row)` for every row of the innermost axis of `axes`.
fn rows(axes: &[Axis], out: &mut [f32], mut f: impl FnMut(&[usize], &mut [f32])) {
    let last = axes.last().expect("at least one axis").len;
    if last == 0 {
        return;
    }
    let outer: Vec<usize> = axes[..axes.len() - 1].iter().map(|a| a.len).collect();
    let mut coords = vec![0; outer.len()];
    for (r, row) in out.chunks_mut(last).enumerate() {
        coords_of(r, &outer, &mut coords);
        f(&coords, row);
    }
}

#[cfg(test)]
mod tests {
    use luminal::op::{InputTensor, Operator};
    use luminal::prelude::*;
    use rustc_hash::FxHashMap;

    use super::*;
    use crate::graph::view::exprs;
    use crate::testing::Rng;

    /// The same primitive through luminal's `process` and through [`eval`].
    fn both(op: &mut dyn Operator, prim: Prim, ins: &[(Vec<f32>, ShapeTracker)]) {
        let map = FxHashMap::default();
        let tensors: Vec<Tensor> = ins.iter().map(|(v, _)| Tensor::new(v.clone())).collect();
        let luminal_in = tensors.iter().zip(ins).map(|(t, (_, st))| (InputTensor::Borrowed(t), *st)).collect();
        let want = op.process(luminal_in);
        let want = want[0].data.as_any().downcast_ref::<Vec<f32>>().unwrap().clone();
        let layouts: Vec<Layout> = ins.iter().map(|(_, st)| Layout::of(st, &map).unwrap()).collect();
        let bufs: Vec<&[f32]> = ins.iter().map(|(v, _)| v.as_slice()).collect();
        let mut got = vec![f32::NAN; want.len()];
        assert!(eval(prim, &bufs, &layouts, &mut got), "{prim:?} evaluated");
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!(w == g || (w.is_nan() && g.is_nan()), "{prim:?} element {i}: luminal {w}, here {g}");
        }
    }

    /// Views of a 3x4 buffer read as 4x3 (permuted), 2x4x3 (broadcast), sliced and padded.
    fn views() -> Vec<ShapeTracker> {
        let base = ShapeTracker::new(&exprs(&[3, 4]));
        let mut permuted = base;
        permuted.permute(&[1, 0]);
        let mut broadcast = permuted;
        broadcast.expand(0, 2.into());
        let mut sliced = base;
        sliced.slice(&[(1.into(), 3.into()), (0.into(), 4.into())]);
        let mut padded = base;
        padded.pad(&[(1.into(), 0.into()), (0.into(), 2.into())]);
        vec![base, permuted, broadcast, sliced, padded]
    }

    #[test]
    fn unary_and_contiguous_match_luminal() {
        let mut rng = Rng::new(1);
        let v = rng.range(12, 0.1, 3.0);
        for st in views() {
            both(&mut luminal::op::Contiguous, Prim::Contiguous, &[(v.clone(), st)]);
            both(&mut luminal::op::Log2, Prim::Log2, &[(v.clone(), st)]);
            both(&mut luminal::op::Exp2, Prim::Exp2, &[(v.clone(), st)]);
            both(&mut luminal::op::Sin, Prim::Sin, &[(v.clone(), st)]);
            both(&mut luminal::op::Sqrt, Prim::Sqrt, &[(v.clone(), st)]);
            both(&mut luminal::op::Recip, Prim::Recip, &[(v.clone(), st)]);
        }
    }

    #[test]
    fn binary_match_luminal() {
        let mut rng = Rng::new(2);
        let (a, b) = (rng.range(12, -2.0, 2.0), rng.range(12, 0.5, 2.0));
        let vs = views();
        for st in &vs {
            // the other operand: the same logical shape, another layout of the same kind
            let other = vs.iter().find(|o| o.shape() == st.shape() && *o != st).copied().unwrap_or(*st);
            let ins = [(a.clone(), *st), (b.clone(), other)];
            both(&mut luminal::op::Add, Prim::Add, &ins);
            both(&mut luminal::op::Mul, Prim::Mul, &ins);
            both(&mut luminal::op::Mod, Prim::Mod, &ins);
            both(&mut luminal::op::LessThan, Prim::LessThan, &ins);
        }
    }

    #[test]
    fn reductions_match_luminal() {
        let mut rng = Rng::new(3);
        let v = rng.uniform(12, 2.0);
        for st in views() {
            for d in 0..st.len() {
                both(&mut luminal::op::SumReduce(d), Prim::SumReduce(d), &[(v.clone(), st)]);
                both(&mut luminal::op::MaxReduce(d), Prim::MaxReduce(d), &[(v.clone(), st)]);
            }
        }
    }
}
