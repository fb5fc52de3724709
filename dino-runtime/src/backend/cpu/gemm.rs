//! Strided batched sgemm on the `gemm` crate, threaded with rayon.
use gemm::Parallelism;
use rayon::prelude::*;

use crate::backend::gemm::GemmAxis;
use crate::backend::layout::Layout;

/// One axis of the product after merging: length and strides in A, B and the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ax {
    pub(crate) len: usize,
    pub(crate) sa: isize,
    pub(crate) sb: isize,
    pub(crate) sc: isize,
}

/// A contraction resolved to strides: one `m x k x n` sgemm per point of the loop axes,
/// accumulated over the points of the extra K axes (K axes that could not be merged).
#[derive(Debug, Clone)]
pub struct GemmPlan {
    pub(crate) m: Ax,
    pub(crate) n: Ax,
    pub(crate) k: Ax,
    pub(crate) loops: Vec<Ax>,
    pub(crate) k_loops: Vec<Ax>,
    /// Base offsets of A and B (views that slice start inside their buffer).
    pub(crate) base: (isize, isize),
    out_len: usize,
}

/// Work below which a product is not worth splitting across threads (multiply-adds).
const PARALLEL_MIN_WORK: usize = 1 << 16;

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
        GemmPlan { m, n, k, loops, k_loops: ks, base: (la.offset, lb.offset), out_len: acc as usize }
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

    fn batch(&self) -> usize {
        self.loops.iter().map(|a| a.len).product()
    }

    /// Offsets of A, B and C at loop point `idx`.
    fn offsets(&self, idx: usize) -> (isize, isize, isize) {
        let (oa, ob, oc) = point_offsets(&self.loops, idx);
        (self.base.0 + oa, self.base.1 + ob, oc)
    }

    /// `out = a * b` (out must hold `out_len()` elements; it is fully overwritten).
    pub fn run(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        assert!(out.len() >= self.out_len, "gemm output buffer too small");
        if self.out_len == 0 {
            return;
        }
        let k_points: usize = self.k_loops.iter().map(|a| a.len).product();
        if self.k.len == 0 || k_points == 0 {
            out[..self.out_len].fill(0.0);
            return;
        }
        let batch = self.batch();
        let per = self.m.len * self.n.len * self.k.len * k_points;
        let threads = rayon::current_num_threads();
        let (pa, pb, pc) = (a.as_ptr() as usize, b.as_ptr() as usize, out.as_mut_ptr() as usize);
        let one = |i: usize, par: Parallelism| {
            let (oa, ob, oc) = self.offsets(i);
            for kp in 0..k_points {
                // offsets of this point of the extra K axes (none for a merged K)
                let (ka, kb, _) = point_offsets(&self.k_loops, kp);
                // SAFETY: offsets and strides come from views of these buffers (checked against
                // their lengths when the plan was built by the runtime); distinct loop points
                // write disjoint parts of the contiguous output.
                unsafe {
                    gemm::gemm(
                        self.m.len,
                        self.n.len,
                        self.k.len,
                        (pc as *mut f32).offset(oc),
                        self.n.sc,
                        self.m.sc,
                        kp > 0,
                        (pa as *const f32).offset(oa + ka),
                        self.k.sa,
                        self.m.sa,
                        (pb as *const f32).offset(ob + kb),
                        self.n.sb,
                        self.k.sb,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            }
        };
        if batch >= threads && threads > 1 && per < PARALLEL_MIN_WORK * 16 && batch * per >= PARALLEL_MIN_WORK {
            (0..batch).into_par_iter().for_each(|i| one(i, Parallelism::None));
        } else {
            let par =
                if per >= PARALLEL_MIN_WORK && threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
            (0..batch).for_each(|i| one(i, par));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn batched_rows_merge_into_one_product() {
        // x (2, 3, 4) . w (4, 5): axes (B, N, O, K) with A = x broadcast over O
        let x: Vec<f32> = (0..24).map(|i| i as f32 * 0.1).collect();
        let w: Vec<f32> = (0..20).map(|i| (i as f32 - 7.0) * 0.2).collect();
        let la = Layout {
            axes: vec![
                crate::backend::layout::Axis { len: 2, stride: 12, lo: 0, hi: 2 },
                crate::backend::layout::Axis { len: 3, stride: 4, lo: 0, hi: 3 },
                crate::backend::layout::Axis { len: 5, stride: 0, lo: 0, hi: 5 },
                crate::backend::layout::Axis { len: 4, stride: 1, lo: 0, hi: 4 },
            ],
            offset: 0,
        };
        let lb = Layout {
            axes: vec![
                crate::backend::layout::Axis { len: 2, stride: 0, lo: 0, hi: 2 },
                crate::backend::layout::Axis { len: 3, stride: 0, lo: 0, hi: 3 },
                crate::backend::layout::Axis { len: 5, stride: 1, lo: 0, hi: 5 },
                crate::backend::layout::Axis { len: 4, stride: 5, lo: 0, hi: 4 },
            ],
            offset: 0,
        };
        let axes = [GemmAxis::M, GemmAxis::M, GemmAxis::N, GemmAxis::K];
        let plan = GemmPlan::new(&axes, &la, &lb);
        assert_eq!(plan.m.len, 6, "B and N rows merge");
        assert!(plan.loops.is_empty());
        let mut out = vec![0f32; plan.out_len()];
        plan.run(&x, &w, &mut out);
        let want = naive(6, 4, 5, &x, &w);
        for (o, w) in out.iter().zip(&want) {
            assert!((o - w).abs() < 1e-4);
        }
    }
}
