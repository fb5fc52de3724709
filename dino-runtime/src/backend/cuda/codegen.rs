//! CUDA C source of fused kernels, printed from the same bound kernels the CPU runs.
//!
//! A [`FusedKernel`] (a fusion-IR program bound to concrete dims and input strides, axes
//! already merged) becomes one `__global__` function with every size, stride and valid range
//! written as a literal, so NVRTC folds the index arithmetic; kernels are compiled once per
//! distinct source and cached by the runtime. The shapes:
//!
//! - **flat**: no reduction and no row stages. One thread per element in a grid-stride loop;
//!   the element's multi-index comes from its flat index by divisions by literals.
//! - **row**: a kernel with row stages (LayerNorm's mean and variance, softmax's max and sum)
//!   or a reduction. One block per row (every axis but the innermost and an outer reduced
//!   one), its threads striding along the row — or, for many short rows (≤ 1024 elements),
//!   one warp per row, 8 rows per block, with warp-shuffle reductions only. Each stage is a
//!   block-wide (`dino_block_sum` / `dino_block_max`: warp shuffles, then one partial per warp
//!   through shared memory) or warp-wide reduction whose value every thread then reads.
//! - **reductions without stages**: along the row as above; over an outer axis, each thread
//!   owns one element of the row (blocks tile the row) and sums the outer axis in a register.
//!   A sum over many elements with few rows is split over blocks, each adding its part with
//!   an atomic add into an output the runtime zeroes first ([`Launch::Rows`]'s `zero`), so a
//!   full reduction of 16 M elements uses the whole GPU rather than one block.
//!
//! Indices are 32-bit where every index of the kernel fits (64-bit division by the literal
//! dims costs several times as much), else 64-bit. [`Tuning`] holds the thresholds;
//! [`Tuning::exercise_all`] takes every path on tiny kernels, for the tests.
//!
//! Loads read `inK[offset + Σ index·stride]` where the view is valid and the input's fill
//! value (0, or -inf for a max over padding) elsewhere, exactly as the CPU kernel. The block
//! reductions are defined in [`CUDA_PRELUDE`]; everything else is plain C, which is how the
//! tests check the generated code on a machine without a GPU: they compile it with the host C
//! compiler against [`HOST_PRELUDE`] (one thread per block) and compare with the CPU kernel.
use std::fmt::Write;

use crate::backend::ir::{BinaryOp, Instr, Program, ReduceKind, UnaryOp};
use crate::backend::plan::FusedKernel;

mod launch;
mod prelude;

use launch::WARP_ROW_MAX;
pub use launch::{KernelSource, Launch, Tuning};
pub use prelude::{CUDA_PRELUDE, HOST_PRELUDE};

/// A float literal that C parses back to the same bits.
fn float_lit(v: f32) -> String {
    if v.is_finite() {
        let s = format!("{v:?}");
        if s.contains(['.', 'e', 'E']) {
            format!("{s}f")
        } else {
            format!("{s}.0f")
        }
    } else {
        format!("__int_as_float((int){:#010x}u)", v.to_bits())
    }
}

/// The prelude's block-wide (or warp-wide) reduction for `kind`.
fn block_reduce(kind: ReduceKind, warp: bool) -> &'static str {
    match (kind, warp) {
        (ReduceKind::Sum, false) => "dino_block_sum",
        (ReduceKind::Max, false) => "dino_block_max",
        (ReduceKind::Sum, true) => "dino_warp_sum",
        (ReduceKind::Max, true) => "dino_warp_max",
    }
}

/// Whether rows get a warp each rather than a block.
fn warp_rows(rows: usize, row_len: usize, t: Tuning) -> bool {
    row_len <= WARP_ROW_MAX && rows >= t.warp_rows_min
}

fn combine(kind: ReduceKind, a: &str, b: &str) -> String {
    match kind {
        ReduceKind::Sum => format!("{a} + {b}"),
        ReduceKind::Max => format!("fmaxf({a}, {b})"),
    }
}

/// The source of one bound kernel. `name` must be a C identifier.
pub fn kernel_source(k: &FusedKernel, name: &str) -> KernelSource {
    kernel_source_tuned(k, name, Tuning::default())
}

/// [`kernel_source`] with reductions split by `tuning`.
pub fn kernel_source_tuned(k: &FusedKernel, name: &str, tuning: Tuning) -> KernelSource {
    let g = Gen { k, out: String::new(), tuning };
    let mut src = g.kernel(name);
    if !tuning.wide_indices && max_index(k) < 1 << 30 {
        // every index fits in 32 bits (with room for a grid stride past the end): 64-bit
        // division by the literal dims costs several times the 32-bit one
        src.code = src.code.replace("long long", "int").replace("LL", "");
    }
    src
}

/// A bound on every index the kernel computes: element counts, and each load's and the
/// output's furthest offset.
fn max_index(k: &FusedKernel) -> usize {
    let total: usize = k.dims.iter().product();
    let reach = |offset: isize, strides: &[isize]| {
        offset.unsigned_abs()
            + strides.iter().zip(&k.dims).map(|(s, d)| s.unsigned_abs() * d.saturating_sub(1)).sum::<usize>()
    };
    let loads = k.loads.iter().map(|l| reach(l.offset, &l.strides)).max().unwrap_or(0);
    total.max(loads).max(reach(0, &k.out_strides)).max(k.out_len())
}

struct Gen<'a> {
    k: &'a FusedKernel,
    out: String,
    tuning: Tuning,
}

impl Gen<'_> {
    fn line(&mut self, depth: usize, s: &str) {
        for _ in 0..depth {
            self.out.push_str("    ");
        }
        self.out.push_str(s);
        self.out.push('\n');
    }

    /// `inK` read at the current point: the index of every axis is `a{i}`.
    fn load(&self, input: usize) -> String {
        let l = &self.k.loads[input];
        let dims = &self.k.dims;
        if (0..dims.len()).any(|i| l.lo[i] >= l.hi[i]) {
            return float_lit(l.fill);
        }
        let mut idx = format!("{}LL", l.offset);
        for (i, &s) in l.strides.iter().enumerate() {
            if s != 0 && dims[i] > 1 {
                let _ = write!(idx, " + a{i} * {s}LL");
            }
        }
        let conds: Vec<String> = (0..dims.len())
            .filter_map(|i| match (l.lo[i] > 0, l.hi[i] < dims[i]) {
                (true, true) => Some(format!("a{i} >= {} && a{i} < {}", l.lo[i], l.hi[i])),
                (true, false) => Some(format!("a{i} >= {}", l.lo[i])),
                (false, true) => Some(format!("a{i} < {}", l.hi[i])),
                (false, false) => None,
            })
            .collect();
        if conds.is_empty() {
            format!("in{input}[{idx}]")
        } else {
            format!("(({}) ? in{input}[{idx}] : {})", conds.join(" && "), float_lit(l.fill))
        }
    }

    /// Emit `p` at the current point into registers `{prefix}{i}`; returns the result's name.
    fn program(&mut self, depth: usize, p: &Program, prefix: &str) -> String {
        for (i, ins) in p.instrs.iter().enumerate() {
            let r = |j: u16| format!("{prefix}{j}");
            let e = match *ins {
                Instr::Load(k) => self.load(k as usize),
                Instr::Const(c) => float_lit(c),
                Instr::Stage(s) => format!("st{s}"),
                Instr::Unary(op, a) => match op {
                    UnaryOp::Log2 => format!("log2f({})", r(a)),
                    UnaryOp::Exp2 => format!("exp2f({})", r(a)),
                    UnaryOp::Sin => format!("sinf({})", r(a)),
                    UnaryOp::Sqrt => format!("sqrtf({})", r(a)),
                    UnaryOp::Recip => format!("1.0f / {}", r(a)),
                },
                Instr::Binary(op, a, b) => match op {
                    BinaryOp::Add => format!("{} + {}", r(a), r(b)),
                    BinaryOp::Mul => format!("{} * {}", r(a), r(b)),
                    BinaryOp::Mod => format!("fmodf({}, {})", r(a), r(b)),
                    BinaryOp::Lt => format!("{} < {} ? 1.0f : 0.0f", r(a), r(b)),
                },
            };
            self.line(depth, &format!("const float {prefix}{i} = {e};"));
        }
        format!("{prefix}{}", p.instrs.len().saturating_sub(1))
    }

    fn out_index(&self, skip: Option<usize>) -> String {
        let mut idx = String::from("0LL");
        for (i, &s) in self.k.out_strides.iter().enumerate() {
            if s != 0 && Some(i) != skip && self.k.dims[i] > 1 {
                let _ = write!(idx, " + a{i} * {s}LL");
            }
        }
        idx
    }

    fn signature(&mut self, name: &str) {
        let mut args: Vec<String> =
            (0..self.k.loads.len()).map(|i| format!("const float* __restrict__ in{i}")).collect();
        args.push("float* __restrict__ out".into());
        self.line(0, &format!("DINO_KERNEL {name}({}) {{", args.join(", ")));
    }

    /// `tid`/`nt` (the thread's place among those sharing a row) and the loop over `blk`,
    /// the row (or row part) this block or warp works on; leaves the loop open at depth 2.
    fn row_loop(&mut self, total: usize, warp: bool) {
        if warp {
            self.line(1, "const long long tid = threadIdx.x % DINO_WARP, nt = DINO_WARP;");
            self.line(
                1,
                &format!(
                    "for (long long blk = (long long)blockIdx.x * DINO_RPB + threadIdx.x / DINO_WARP; blk < {total}LL; blk += (long long)gridDim.x * DINO_RPB) {{"
                ),
            );
        } else {
            self.line(1, "const long long tid = threadIdx.x, nt = blockDim.x;");
            self.line(1, &format!("for (long long blk = blockIdx.x; blk < {total}LL; blk += gridDim.x) {{"));
        }
    }

    /// Declare the row axes' indices from `row`.
    fn row_indices(&mut self, depth: usize, row_axes: &[usize]) {
        if !row_axes.is_empty() {
            self.line(depth, "long long rest = row;");
        }
        for (j, &a) in row_axes.iter().enumerate().rev() {
            if j == 0 {
                self.line(depth, &format!("const long long a{a} = rest;"));
            } else {
                self.line(depth, &format!("const long long a{a} = rest % {d}LL; rest /= {d}LL;", d = self.k.dims[a]));
            }
        }
    }

    /// A reduction with no row stages, along the row (`red` = the innermost axis: a block or
    /// a warp per row) or over an outer axis (each thread owns one element of the row, blocks
    /// tile the row, and the outer axis is summed in a register). A sum over many elements
    /// with few rows is split: `split` blocks per row (or row tile) each take a contiguous
    /// part of the reduced axis and add their total atomically into an output zeroed before
    /// the launch (float addition in a varying order: such sums may differ in the last bits
    /// from run to run).
    fn reduction(&mut self, rows: usize, row_axes: &[usize], row_len: usize, red: usize, kind: ReduceKind) -> Launch {
        let k = self.k;
        let inner = k.dims.len() - 1;
        let red_len = k.dims[red];
        let along = red == inner;
        let (tile, tiles) =
            if along { (row_len, 1) } else { (self.tuning.outer_tile.min(row_len.div_ceil(32) * 32), 0) };
        let tiles = if along { tiles } else { row_len.div_ceil(tile) };
        let units = rows * tiles;
        let work = if along { row_len } else { red_len * tile };
        let t = self.tuning;
        let split = if kind == ReduceKind::Sum {
            (t.target_blocks / units.max(1)).min(work / t.min_block_work.max(1)).min(red_len).max(1)
        } else {
            1
        };
        let warp = along && split == 1 && warp_rows(rows, row_len, t);
        let chunk = red_len.div_ceil(split);
        self.row_loop(units * split, warp);
        if split > 1 {
            self.line(2, &format!("const long long unit = blk / {split}LL, part = blk % {split}LL;"));
            self.line(2, &format!("const long long lo = part * {chunk}LL;"));
            self.line(2, &format!("const long long hi = lo + {chunk}LL < {red_len}LL ? lo + {chunk}LL : {red_len}LL;"));
        } else {
            self.line(2, &format!("const long long unit = blk, lo = 0, hi = {red_len}LL;"));
        }
        let store = |o: &str, v: &str| {
            if split > 1 {
                format!("atomicAdd(&out[{o}], {v});")
            } else {
                format!("out[{o}] = {v};")
            }
        };
        let id = float_lit(kind.identity());
        if along {
            self.line(2, "const long long row = unit;");
            self.row_indices(2, row_axes);
            self.line(2, &format!("float acc = {id};"));
            self.line(2, &format!("for (long long a{inner} = lo + tid; a{inner} < hi; a{inner} += nt) {{"));
            let v = self.program(3, &k.program, "r");
            self.line(3, &format!("acc = {};", combine(kind, "acc", &v)));
            self.line(2, "}");
            self.line(2, &format!("acc = {}(acc);", block_reduce(kind, warp)));
            let o = self.out_index(Some(inner));
            self.line(2, &format!("if (tid == 0) {}", store(&o, "acc")));
        } else {
            self.line(2, &format!("const long long row = unit / {tiles}LL;"));
            self.row_indices(2, row_axes);
            // one thread per element of the tile (a loop where threads are fewer: the host)
            self.line(2, &format!("for (long long t = tid; t < {tile}LL; t += nt) {{"));
            self.line(3, &format!("const long long a{inner} = (unit % {tiles}LL) * {tile}LL + t;"));
            self.line(3, &format!("if (a{inner} >= {row_len}LL) break;"));
            self.line(3, &format!("float acc = {id};"));
            self.line(3, &format!("for (long long a{red} = lo; a{red} < hi; ++a{red}) {{"));
            let v = self.program(4, &k.program, "r");
            self.line(4, &format!("acc = {};", combine(kind, "acc", &v)));
            self.line(3, "}");
            let o = self.out_index(Some(red));
            self.line(3, &store(&o, "acc"));
            self.line(2, "}");
        }
        self.line(1, "}");
        Launch::Rows { rows: units, row_len: tile, split, zero: if split > 1 { k.out_len() } else { 0 }, warp }
    }

    fn kernel(mut self, name: &str) -> KernelSource {
        let k = self.k;
        let rank = k.dims.len();
        let _ = writeln!(self.out, "/* {} */", k.shape_summary());
        self.signature(name);
        let launch = if k.stages.is_empty() && k.reduce.is_none() {
            let total: usize = k.dims.iter().product();
            self.line(
                1,
                &format!(
                    "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < {total}LL; i += (long long)gridDim.x * blockDim.x) {{"
                ),
            );
            if rank > 0 {
                self.line(2, "long long rest = i;");
            }
            for a in (0..rank).rev() {
                if a == 0 {
                    self.line(2, "const long long a0 = rest;");
                } else {
                    self.line(2, &format!("const long long a{a} = rest % {d}LL; rest /= {d}LL;", d = k.dims[a]));
                }
            }
            let r = self.program(2, &k.program, "r");
            let o = self.out_index(None);
            self.line(2, &format!("out[{o}] = {r};"));
            self.line(1, "}");
            Launch::Flat { total }
        } else {
            assert!(rank > 0, "a kernel with stages or a reduction has at least one axis");
            let inner = rank - 1;
            let red = k.reduce;
            let outer = red.map(|r| r.0).filter(|&a| a != inner);
            let row_axes: Vec<usize> = (0..inner).filter(|&a| Some(a) != outer).collect();
            let rows: usize = row_axes.iter().map(|&a| k.dims[a]).product();
            let row_len = k.dims[inner];
            if let (true, Some((a, kind))) = (k.stages.is_empty(), red) {
                let launch = self.reduction(rows, &row_axes, row_len, a, kind);
                self.line(0, "}");
                return KernelSource { name: name.to_string(), code: self.out, launch, n_inputs: k.loads.len() };
            }
            // rows with stages (or no reduction): a block per row, or a warp per short row
            let warp = outer.is_none() && warp_rows(rows, row_len, self.tuning);
            self.row_loop(rows, warp);
            self.line(2, "const long long row = blk;");
            self.row_indices(2, &row_axes);
            let mut depth = 2;
            if let Some(a) = outer {
                self.line(depth, &format!("for (long long a{a} = 0; a{a} < {}LL; ++a{a}) {{", k.dims[a]));
                depth += 1;
            }
            let row_loop = format!("for (long long a{inner} = tid; a{inner} < {row_len}LL; a{inner} += nt) {{");
            // stages: block-wide reductions over the row, in order
            for (s, (p, kind)) in k.stages.iter().enumerate() {
                let block = block_reduce(*kind, warp);
                self.line(depth, &format!("float st{s};"));
                self.line(depth, "{");
                self.line(depth + 1, &format!("float acc = {};", float_lit(kind.identity())));
                self.line(depth + 1, &row_loop);
                let v = self.program(depth + 2, p, &format!("s{s}_"));
                self.line(depth + 2, &format!("acc = {};", combine(*kind, "acc", &v)));
                self.line(depth + 1, "}");
                self.line(depth + 1, &format!("st{s} = {block}(acc);"));
                self.line(depth, "}");
            }
            match red {
                Some((a, kind)) if a == inner => {
                    let block = block_reduce(kind, warp);
                    self.line(depth, &format!("float acc = {};", float_lit(kind.identity())));
                    self.line(depth, &row_loop);
                    let v = self.program(depth + 1, &k.program, "r");
                    self.line(depth + 1, &format!("acc = {};", combine(kind, "acc", &v)));
                    self.line(depth, "}");
                    self.line(depth, &format!("acc = {block}(acc);"));
                    let o = self.out_index(Some(inner));
                    self.line(depth, &format!("if (tid == 0) out[{o}] = acc;"));
                }
                Some((a, kind)) => {
                    self.line(depth, &row_loop);
                    let v = self.program(depth + 1, &k.program, "r");
                    let o = self.out_index(Some(a));
                    self.line(depth + 1, &format!("const long long o = {o};"));
                    self.line(depth + 1, &format!("out[o] = a{a} == 0 ? {v} : {};", combine(kind, "out[o]", &v)));
                    self.line(depth, "}");
                }
                None => {
                    self.line(depth, &row_loop);
                    let v = self.program(depth + 1, &k.program, "r");
                    let o = self.out_index(None);
                    self.line(depth + 1, &format!("out[{o}] = {v};"));
                    self.line(depth, "}");
                }
            }
            if outer.is_some() {
                self.line(2, "}");
            }
            self.line(1, "}");
            Launch::Rows { rows, row_len, split: 1, zero: 0, warp }
        };
        self.line(0, "}");
        KernelSource { name: name.to_string(), code: self.out, launch, n_inputs: k.loads.len() }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_support;
