//! Strided batched sgemm on the `gemm` crate, threaded with rayon: the CPU's way of running a
//! planned contraction ([`GemmPlan`]).
use gemm::Parallelism;
use rayon::prelude::*;

use crate::backend::plan::contraction::point_offsets;
pub use crate::backend::plan::GemmPlan;

/// Work below which a product is not worth splitting across threads (multiply-adds).
const PARALLEL_MIN_WORK: usize = 1 << 16;

impl GemmPlan {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gemm::GemmAxis;
    use crate::backend::layout::Layout;

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
