//! Execution of a fused kernel on the CPU.
//!
//! The iteration space is walked row by row (every axis but the innermost), rows split across
//! rayon threads; along a row the program runs a block of [`BLOCK`] elements at a time, one
//! instruction at a time over the whole block (see `eval.rs`). Loads with unit stride read the
//! input in place, broadcast loads stay scalars, other strides are gathered. Adjacent axes
//! that are contiguous in every operand are merged first, so most kernels see one long row.
use rayon::prelude::*;

use super::eval::{eval_block, Isa, Load, Scratch, BLOCK};
use crate::backend::fused::FusedOp;
use crate::backend::ir::{Program, ReduceKind};
use crate::backend::layout::Layout;

/// Below this many evaluated elements a kernel runs on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// A fused kernel bound to concrete dims and input layouts.
#[derive(Debug, Clone)]
pub struct FusedKernel {
    pub(crate) program: Program,
    /// Row reductions before the program (see `ir::Stage`).
    pub(crate) stages: Vec<(Program, ReduceKind)>,
    /// Iteration dims after merging axes; the last one is the row.
    pub(crate) dims: Vec<usize>,
    /// Per input: strides and valid ranges per iteration axis, base offset, fill value.
    pub(crate) loads: Vec<LoadSpec>,
    /// Output strides per iteration axis (0 on the reduced axis).
    pub(crate) out_strides: Vec<isize>,
    pub(crate) reduce: Option<(usize, ReduceKind)>,
    out_len: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    pub(crate) strides: Vec<isize>,
    pub(crate) lo: Vec<usize>,
    pub(crate) hi: Vec<usize>,
    pub(crate) offset: isize,
    pub(crate) fill: f32,
}

impl FusedKernel {
    /// Bind `op` to concrete iteration `dims` and one resolved layout per input.
    pub fn new(op: &FusedOp, dims: &[usize], layouts: &[Layout]) -> FusedKernel {
        let rank = dims.len();
        let reduce = op.reduce;
        let mut out_strides = vec![0isize; rank];
        let mut acc = 1isize;
        for i in (0..rank).rev() {
            if reduce.map(|r| r.0) != Some(i) {
                out_strides[i] = acc;
                acc *= dims[i] as isize;
            }
        }
        let loads = layouts
            .iter()
            .zip(&op.fills)
            .map(|(l, &fill)| {
                debug_assert_eq!(l.axes.len(), rank, "view rank differs from the kernel's");
                LoadSpec {
                    strides: l.axes.iter().map(|a| a.stride).collect(),
                    lo: l.axes.iter().map(|a| a.lo).collect(),
                    hi: l.axes.iter().map(|a| a.hi).collect(),
                    offset: l.offset,
                    fill,
                }
            })
            .collect();
        let mut k = FusedKernel {
            program: op.program.clone(),
            stages: op.stages.iter().map(|s| (s.program.clone(), s.kind)).collect(),
            dims: dims.to_vec(),
            loads,
            out_strides,
            reduce,
            out_len: acc as usize,
        };
        k.merge_axes();
        k
    }

    /// A copy of the view `src` into a contiguous buffer whose axes run in the order `axes`
    /// (indices into `src`'s axes; the last one adjacent). Axes left out must be broadcast
    /// (stride 0) or of length 1.
    pub fn copy(src: &Layout, axes: &[usize]) -> FusedKernel {
        let dims: Vec<usize> = axes.iter().map(|&a| src.axes[a].len).collect();
        let mut out_strides = vec![0isize; dims.len()];
        let mut acc = 1isize;
        for i in (0..dims.len()).rev() {
            out_strides[i] = acc;
            acc *= dims[i] as isize;
        }
        let load = LoadSpec {
            strides: axes.iter().map(|&a| src.axes[a].stride).collect(),
            lo: axes.iter().map(|&a| src.axes[a].lo).collect(),
            hi: axes.iter().map(|&a| src.axes[a].hi).collect(),
            offset: src.offset,
            fill: 0.0,
        };
        let mut k = FusedKernel {
            program: Program { instrs: vec![crate::backend::ir::Instr::Load(0)] },
            stages: vec![],
            dims,
            loads: vec![load],
            out_strides,
            reduce: None,
            out_len: acc as usize,
        };
        k.merge_axes();
        k
    }

    /// Output elements.
    pub fn out_len(&self) -> usize {
        self.out_len
    }

    /// Iteration dims (after merging), reduced axis and program length, for profiles.
    pub fn shape_summary(&self) -> String {
        let red = self.reduce.map(|(a, k)| format!(" {k:?}@{a}")).unwrap_or_default();
        let stage_instrs: usize = self.stages.iter().map(|(p, _)| p.instrs.len()).sum();
        format!(
            "{:?}{red} ({} instrs, {} stages of {} instrs, {} inputs)",
            self.dims,
            self.program.instrs.len(),
            self.stages.len(),
            stage_instrs,
            self.loads.len()
        )
    }

    /// Elements evaluated (the iteration space).
    pub fn work(&self) -> usize {
        self.dims.iter().product()
    }

    /// Merge adjacent axes that are contiguous in every operand and fully valid, and drop
    /// length-1 axes; never touch the reduced axis.
    fn merge_axes(&mut self) {
        let red = self.reduce.map(|r| r.0);
        // stages reduce whole rows: the innermost axis must stay as it is
        let row = (!self.stages.is_empty()).then(|| self.dims.len() - 1);
        let mut i = self.dims.len();
        while i >= 2 {
            i -= 1;
            let (o, n) = (i - 1, i);
            if red == Some(o) || red == Some(n) || row == Some(n) {
                continue;
            }
            let len_n = self.dims[n] as isize;
            let ok = |so: isize, sn: isize| so == sn * len_n;
            let loads_ok = self.loads.iter().all(|l| {
                ok(l.strides[o], l.strides[n])
                    && l.lo[o] == 0
                    && l.hi[o] == self.dims[o]
                    && l.lo[n] == 0
                    && l.hi[n] == self.dims[n]
            });
            if loads_ok && ok(self.out_strides[o], self.out_strides[n]) {
                let len = self.dims[o] * self.dims[n];
                self.dims[o] = len;
                self.out_strides[o] = self.out_strides[n];
                for l in &mut self.loads {
                    l.strides[o] = l.strides[n];
                    l.hi[o] = len;
                }
                self.remove_axis(n);
            }
        }
        // length-1 axes that every input reads fully carry no information
        let mut i = 0;
        while i < self.dims.len() {
            let full = self.loads.iter().all(|l| l.lo[i] == 0 && l.hi[i] == 1);
            let last_with_stages = !self.stages.is_empty() && i + 1 == self.dims.len();
            if self.dims[i] == 1 && red != Some(i) && full && self.dims.len() > 1 && !last_with_stages {
                self.remove_axis(i);
            } else {
                i += 1;
            }
        }
    }

    fn remove_axis(&mut self, a: usize) {
        self.dims.remove(a);
        self.out_strides.remove(a);
        for l in &mut self.loads {
            l.strides.remove(a);
            l.lo.remove(a);
            l.hi.remove(a);
        }
        if let Some((r, k)) = self.reduce {
            if r > a {
                self.reduce = Some((r - 1, k));
            }
        }
    }

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
