//! A contraction bound to concrete strides: the device-neutral description of a GEMM step
//! (one `m x k x n` product per point of the loop axes, accumulated over extra K axes). The CPU
//! runs it on the `gemm` crate (`cpu/gemm.rs`), the GPU as cuBLAS calls (`cuda/blas.rs`).

use crate::backend::gemm::GemmAxis;
use crate::backend::layout::Layout;

use super::build::DType;

/// One axis of the product after merging: length and strides in A, B and the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Ax {
    pub(crate) len: usize,
    pub(crate) sa: isize,
    pub(crate) sb: isize,
    pub(crate) sc: isize,
}

/// A contraction resolved to strides: one `m x k x n` sgemm per point of the loop axes,
/// accumulated over the points of the extra K axes (K axes that could not be merged).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GemmPlan {
    pub(crate) m: Ax,
    pub(crate) n: Ax,
    pub(crate) k: Ax,
    pub(crate) loops: Vec<Ax>,
    pub(crate) k_loops: Vec<Ax>,
    /// Base offsets of A and B (views that slice start inside their buffer).
    pub(crate) base: (isize, isize),
    pub(crate) out_len: usize,
    /// The type the product reads its operands in (f32 sources rounded when bf16), with f32
    /// accumulation; set by the precision pass.
    pub operands: DType,
}

impl GemmPlan {
    /// Plan `a * b` summed over the K axes, for views resolved to `la` and `lb`.
    pub fn new(axes: &[GemmAxis], la: &Layout, lb: &Layout) -> GemmPlan {
        let dims = la.dims();
        // Output strides: contiguous over the non-K axes in logical order.
        let mut sc = vec![0isize; dims.len()];
        let mut acc = 1isize;
        for i in (0..dims.len()).rev() {
            if axes[i] != GemmAxis::K {
                sc[i] = acc;
                acc *= dims[i] as isize;
            }
        }
        let ax = |i: usize| Ax { len: dims[i], sa: la.axes[i].stride, sb: lb.axes[i].stride, sc: sc[i] };
        let group = |role: GemmAxis| merge((0..dims.len()).filter(|&i| axes[i] == role).map(ax).collect());
        let (mut ms, mut ns, batch) = (group(GemmAxis::M), group(GemmAxis::N), group(GemmAxis::Batch));
        let mut ks = group(GemmAxis::K);
        let unit = Ax { len: 1, sa: 0, sb: 0, sc: 0 };
        let take_largest = |v: &mut Vec<Ax>| {
            v.iter().enumerate().max_by_key(|(_, a)| a.len).map(|(i, _)| i).map(|i| v.remove(i)).unwrap_or(unit)
        };
        let m = take_largest(&mut ms);
        let n = take_largest(&mut ns);
        let k = take_largest(&mut ks);
        let mut loops = batch;
        loops.extend(ms);
        loops.extend(ns);
        GemmPlan {
            m,
            n,
            k,
            loops,
            k_loops: ks,
            base: (la.offset, lb.offset),
            out_len: acc as usize,
            operands: DType::F32,
        }
    }

    /// Output elements.
    pub fn out_len(&self) -> usize {
        self.out_len
    }

    /// `batch x m x n x k` and strides, for profiles.
    pub fn shape_summary(&self) -> String {
        format!(
            "{}x[{}x{}x{}] a({},{}) b({},{})",
            self.batch(),
            self.m.len,
            self.n.len,
            self.k.len,
            self.m.sa,
            self.k.sa,
            self.k.sb,
            self.n.sb
        )
    }

    /// Multiply-adds.
    pub fn work(&self) -> usize {
        self.batch() * self.m.len * self.n.len * self.k.len * self.k_loops.iter().map(|a| a.len).product::<usize>()
    }

    /// `(batch, m, n, k)` of the products (K over every K axis).
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        (self.batch(), self.m.len, self.n.len, self.k.len * self.k_loops.iter().map(|a| a.len).product::<usize>())
    }

    pub(crate) fn batch(&self) -> usize {
        self.loops.iter().map(|a| a.len).product()
    }

    /// Offsets of A, B and C at loop point `idx`.
    pub(crate) fn offsets(&self, idx: usize) -> (isize, isize, isize) {
        let (oa, ob, oc) = point_offsets(&self.loops, idx);
        (self.base.0 + oa, self.base.1 + ob, oc)
    }
}

/// Offsets in A, B and the output of point `idx` (row-major) of the loop `axes`.
pub(crate) fn point_offsets(axes: &[Ax], mut idx: usize) -> (isize, isize, isize) {
    let (mut oa, mut ob, mut oc) = (0isize, 0isize, 0isize);
    for a in axes.iter().rev() {
        let j = (idx % a.len) as isize;
        idx /= a.len;
        oa += j * a.sa;
        ob += j * a.sb;
        oc += j * a.sc;
    }
    (oa, ob, oc)
}

/// Merge axes of one role that are adjacent in memory in every operand they index, so a
/// `(B, N, D)` activation times a weight is one `B*N x D` product, not `B` of them.
fn merge(mut v: Vec<Ax>) -> Vec<Ax> {
    let mut i = v.len();
    while i >= 2 {
        i -= 1;
        let (outer, inner) = (v[i - 1], v[i]);
        let ok = |so: isize, si: isize| so == si * inner.len as isize;
        if ok(outer.sa, inner.sa) && ok(outer.sb, inner.sb) && ok(outer.sc, inner.sc) {
            v[i - 1] = Ax { len: outer.len * inner.len, sa: inner.sa, sb: inner.sb, sc: inner.sc };
            v.remove(i);
        }
    }
    v
}
