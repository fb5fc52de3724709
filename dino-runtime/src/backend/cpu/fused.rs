//! Execution of a fused kernel on the CPU.
//!
//! The iteration space is walked row by row (every axis but the innermost), rows split across
//! rayon threads; along a row the program runs a block of [`BLOCK`] elements at a time, one
//! instruction at a time over the whole block (see `eval.rs`). Loads with unit stride read the
//! input in place, broadcast loads stay scalars, other strides are gathered. Adjacent axes
//! that are contiguous in every operand are merged first, so most kernels see one long row.
use rayon::prelude::*;

use super::eval::{eval_block, Isa, Load, Scratch, BLOCK};
use crate::backend::ir::ReduceKind;

/// Below this many evaluated elements a kernel runs on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

pub use crate::backend::plan::FusedKernel;

impl FusedKernel {
    /// Evaluate into `out` (`out_len()` elements, fully overwritten).
    pub fn run(&self, inputs: &[&[f32]], out: &mut [f32]) {
        assert!(out.len() >= self.out_len, "fused output buffer too small");
        assert_eq!(inputs.len(), self.loads.len(), "one buffer per input");
        let isa = Isa::detect();
        let rank = self.dims.len();
        let (row_len, red) = match rank {
            0 => (1, None),
            _ => (self.dims[rank - 1], self.reduce.map(|r| (r.0, r.1))),
        };
        // rows: all axes but the last, and for an outer reduction also not the reduced axis
        let row_axes: Vec<usize> = (0..rank.saturating_sub(1)).filter(|&a| red.map(|r| r.0) != Some(a)).collect();
        let n_rows: usize = row_axes.iter().map(|&a| self.dims[a]).product();
        if let Some((_, kind)) = red {
            // identity for accumulating reductions; inner reductions overwrite anyway
            out[..self.out_len].fill(kind.identity());
        }
        let work = self.work();
        let out_ptr = SendPtr(out.as_mut_ptr());
        let run_rows = |start: usize, end: usize| {
            let mut scratch = Scratch::new(&self.program);
            let mut stage_scratch: Vec<Scratch> = self.stages.iter().map(|(p, _)| Scratch::new(p)).collect();
            // SAFETY: rows write disjoint output elements (the output is contiguous over the
            // non-reduced axes and every row owns its own output positions).
            unsafe { self.rows(isa, inputs, out_ptr, &row_axes, row_len, start, end, &mut scratch, &mut stage_scratch) }
        };
        let threads = rayon::current_num_threads();
        if work < PARALLEL_MIN_ELEMENTS || threads == 1 || n_rows == 1 {
            run_rows(0, n_rows);
        } else {
            let chunks = (threads * 4).min(n_rows);
            (0..chunks).into_par_iter().for_each(|c| run_rows(c * n_rows / chunks, (c + 1) * n_rows / chunks));
        }
    }

    /// Evaluate rows `start..end`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows(
        &self,
        isa: Isa,
        inputs: &[&[f32]],
        out: SendPtr,
        row_axes: &[usize],
        row_len: usize,
        start: usize,
        end: usize,
        scratch: &mut Scratch,
        stage_scratch: &mut [Scratch],
    ) {
        let rank = self.dims.len();
        let inner = rank.checked_sub(1);
        // multi-index of the first row
        let mut idx = vec![0usize; row_axes.len()];
        let mut r = start;
        for (j, &a) in row_axes.iter().enumerate().rev() {
            idx[j] = r % self.dims[a];
            r /= self.dims[a];
        }
        let mut loads: Vec<Load> = vec![Load::default(); self.loads.len()];
        let mut stage_vals = vec![0f32; self.stages.len()];
        for _ in start..end {
            // base offsets and validity of this row, before the reduced (outer) axis
            let mut out_base = 0isize;
            for (j, &a) in row_axes.iter().enumerate() {
                out_base += idx[j] as isize * self.out_strides[a];
            }
            for (l, spec) in loads.iter_mut().zip(&self.loads) {
                let mut base = spec.offset;
                let mut valid = true;
                for (j, &a) in row_axes.iter().enumerate() {
                    base += idx[j] as isize * spec.strides[a];
                    valid &= idx[j] >= spec.lo[a] && idx[j] < spec.hi[a];
                }
                *l = match inner {
                    Some(i) => {
                        Load { base, valid, stride: spec.strides[i], lo: spec.lo[i], hi: spec.hi[i], fill: spec.fill }
                    }
                    None => Load { base, valid, stride: 0, lo: 0, hi: 1, fill: spec.fill },
                };
            }
            // row reductions first, each seeing the ones before it (for an outer reduction
            // they depend on the reduced coordinate too and run inside its loop below)
            if !matches!(self.reduce, Some((a, _)) if Some(a) != inner) {
                self.stages_of_row(isa, inputs, &loads, row_len, &mut stage_vals, stage_scratch);
            }
            match self.reduce {
                // reduce along the row: one output value per row
                Some((a, kind)) if Some(a) == inner => {
                    let mut acc = kind.identity();
                    let mut s = 0;
                    while s < row_len {
                        let n = BLOCK.min(row_len - s);
                        acc = eval_block(
                            isa,
                            &self.program,
                            inputs,
                            &loads,
                            &stage_vals,
                            s,
                            n,
                            scratch,
                            Sink::Reduce(kind, acc),
                        );
                        s += n;
                    }
                    *out.0.offset(out_base) = acc;
                }
                // reduce an outer axis: accumulate whole rows
                Some((a, kind)) => {
                    let row = std::slice::from_raw_parts_mut(out.0.offset(out_base), row_len);
                    for j in 0..self.dims[a] {
                        let mut step = loads.clone();
                        for (l, spec) in step.iter_mut().zip(&self.loads) {
                            l.base += j as isize * spec.strides[a];
                            l.valid &= j >= spec.lo[a] && j < spec.hi[a];
                        }
                        self.stages_of_row(isa, inputs, &step, row_len, &mut stage_vals, stage_scratch);
                        let mut s = 0;
                        while s < row_len {
                            let n = BLOCK.min(row_len - s);
                            eval_block(
                                isa,
                                &self.program,
                                inputs,
                                &step,
                                &stage_vals,
                                s,
                                n,
                                scratch,
                                Sink::Accumulate(kind, &mut row[s..s + n]),
                            );
                            s += n;
                        }
                    }
                }
                None => {
                    let row = std::slice::from_raw_parts_mut(out.0.offset(out_base), row_len);
                    let mut s = 0;
                    while s < row_len {
                        let n = BLOCK.min(row_len - s);
                        eval_block(
                            isa,
                            &self.program,
                            inputs,
                            &loads,
                            &stage_vals,
                            s,
                            n,
                            scratch,
                            Sink::Store(&mut row[s..s + n]),
                        );
                        s += n;
                    }
                }
            }
            // next row
            for j in (0..row_axes.len()).rev() {
                idx[j] += 1;
                if idx[j] < self.dims[row_axes[j]] {
                    break;
                }
                idx[j] = 0;
            }
        }
    }
}

impl FusedKernel {
    /// Compute every stage's value for the row the loads point at.
    fn stages_of_row(
        &self,
        isa: Isa,
        inputs: &[&[f32]],
        loads: &[Load],
        row_len: usize,
        vals: &mut [f32],
        scratch: &mut [Scratch],
    ) {
        for (k, ((p, kind), sc)) in self.stages.iter().zip(scratch.iter_mut()).enumerate() {
            let mut acc = kind.identity();
            let mut s = 0;
            while s < row_len {
                let n = BLOCK.min(row_len - s);
                acc = eval_block(isa, p, inputs, loads, vals, s, n, sc, Sink::Reduce(*kind, acc));
                s += n;
            }
            vals[k] = acc;
        }
    }
}

/// Where a block's values go.
pub enum Sink<'a> {
    /// Overwrite.
    Store(&'a mut [f32]),
    /// Combine elementwise into existing values.
    Accumulate(ReduceKind, &'a mut [f32]),
    /// Reduce to one value, starting from the given one.
    Reduce(ReduceKind, f32),
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
