//! A fused kernel bound to concrete dims and input layouts: the device-neutral form of a
//! fused step. Binding merges adjacent axes that are contiguous in every operand, so most
//! kernels see one long row. The CPU interprets it (`cpu/fused.rs`), the GPU prints it as
//! CUDA C (`cuda/codegen.rs`).
use crate::backend::fused::FusedOp;
use crate::backend::ir::{Program, ReduceKind};
use crate::backend::layout::Layout;

/// A fused kernel bound to concrete dims and input layouts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    pub(crate) out_len: usize,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
}
