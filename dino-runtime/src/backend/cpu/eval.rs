//! The block interpreter: one program instruction at a time over up to [`BLOCK`] elements.
//!
//! Each instruction is one tight loop over a block held in L1, which LLVM vectorizes; the
//! dispatch cost is paid once per instruction per block, never per element. Values are either
//! scalars (constants, broadcast loads) or pointers to a block (an input read in place, or a
//! scratch slot). The loops are compiled once per instruction-set level and chosen at run time.
use super::fused::Sink;
use super::math;
use crate::backend::ir::{BinaryOp, Instr, Program, ReduceKind, UnaryOp};

/// Elements per block.
pub const BLOCK: usize = 512;

/// One input's addressing along the current row.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// Buffer index of row position 0.
    pub base: isize,
    /// Whether the row's outer coordinates are inside the view's valid range.
    pub valid: bool,
    /// Stride along the row.
    pub stride: isize,
    /// Positions `lo..hi` of the row read the buffer; others read `fill`.
    pub lo: usize,
    pub hi: usize,
    pub fill: f32,
}

#[derive(Clone, Copy)]
enum Val {
    Scalar(f32),
    Block(*const f32),
}

/// Per-thread scratch: one block slot per live register.
pub struct Scratch {
    slots: Vec<[f32; BLOCK]>,
    slot_of: Vec<usize>,
    vals: Vec<Val>,
}

impl Scratch {
    /// Allocate slots by linear scan over the program's live ranges; a slot is reused only
    /// after the instruction that reads it last, so no instruction writes what it reads.
    pub fn new(p: &Program) -> Scratch {
        let last = p.last_uses();
        let mut free: Vec<usize> = vec![];
        let mut n_slots = 0;
        let mut slot_of = vec![usize::MAX; p.instrs.len()];
        let mut dying: Vec<Vec<usize>> = vec![vec![]; p.instrs.len()];
        for (i, &l) in last.iter().enumerate() {
            if l != usize::MAX && l > i {
                dying[l].push(i);
            }
        }
        for (i, ins) in p.instrs.iter().enumerate() {
            if !matches!(ins, Instr::Const(_) | Instr::Stage(_)) {
                slot_of[i] = free.pop().unwrap_or_else(|| {
                    n_slots += 1;
                    n_slots - 1
                });
            }
            for &d in &dying[i] {
                if slot_of[d] != usize::MAX {
                    free.push(slot_of[d]);
                }
            }
        }
        Scratch { slots: vec![[0.0; BLOCK]; n_slots], slot_of, vals: vec![Val::Scalar(0.0); p.instrs.len()] }
    }
}

/// Instruction-set level of the vector loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Base,
}

impl Isa {
    /// The best level this CPU supports.
    pub fn detect() -> Isa {
        use std::sync::OnceLock;
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") {
                    return Isa::Avx512;
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    return Isa::Avx2;
                }
            }
            Isa::Base
        })
    }
}

/// Evaluate the program on positions `s..s+n` of the current row and deliver the values to
/// `sink`. Returns the running value for [`Sink::Reduce`], else 0.
#[allow(clippy::too_many_arguments)]
pub fn eval_block(
    isa: Isa,
    p: &Program,
    inputs: &[&[f32]],
    loads: &[Load],
    stages: &[f32],
    s: usize,
    n: usize,
    sc: &mut Scratch,
    sink: Sink,
) -> f32 {
    // SAFETY: the runtime checked that every view stays inside its buffer, and the CPU
    // supports the instruction set `isa` names (Isa::detect).
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => eval_avx512(p, inputs, loads, stages, s, n, sc, sink),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => eval_avx2(p, inputs, loads, stages, s, n, sc, sink),
            _ => eval_generic(p, inputs, loads, stages, s, n, sc, sink),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn eval_avx512(
    p: &Program,
    inputs: &[&[f32]],
    loads: &[Load],
    stages: &[f32],
    s: usize,
    n: usize,
    sc: &mut Scratch,
    sink: Sink,
) -> f32 {
    eval_generic(p, inputs, loads, stages, s, n, sc, sink)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn eval_avx2(
    p: &Program,
    inputs: &[&[f32]],
    loads: &[Load],
    stages: &[f32],
    s: usize,
    n: usize,
    sc: &mut Scratch,
    sink: Sink,
) -> f32 {
    eval_generic(p, inputs, loads, stages, s, n, sc, sink)
}

#[inline(always)]
unsafe fn eval_generic(
    p: &Program,
    inputs: &[&[f32]],
    loads: &[Load],
    stages: &[f32],
    s: usize,
    n: usize,
    sc: &mut Scratch,
    sink: Sink,
) -> f32 {
    for (i, ins) in p.instrs.iter().enumerate() {
        let dst = if sc.slot_of[i] == usize::MAX { std::ptr::null_mut() } else { sc.slots[sc.slot_of[i]].as_mut_ptr() };
        let v = match *ins {
            Instr::Const(c) => Val::Scalar(c),
            Instr::Stage(k) => Val::Scalar(stages[k as usize]),
            Instr::Load(k) => load(inputs[k as usize], &loads[k as usize], s, n, dst),
            Instr::Unary(op, a) => match sc.vals[a as usize] {
                Val::Scalar(x) => Val::Scalar(crate::backend::ir::eval_unary(op, x)),
                Val::Block(x) => {
                    unary(op, std::slice::from_raw_parts(x, n), std::slice::from_raw_parts_mut(dst, n));
                    Val::Block(dst)
                }
            },
            Instr::Binary(op, a, b) => match (sc.vals[a as usize], sc.vals[b as usize]) {
                (Val::Scalar(x), Val::Scalar(y)) => Val::Scalar(crate::backend::ir::eval_binary(op, x, y)),
                (x, y) => {
                    binary(op, x, y, std::slice::from_raw_parts_mut(dst, n));
                    Val::Block(dst)
                }
            },
        };
        sc.vals[i] = v;
    }
    let v = sc.vals[p.instrs.len() - 1];
    match sink {
        Sink::Store(out) => {
            match v {
                Val::Scalar(x) => out.fill(x),
                Val::Block(x) => out.copy_from_slice(std::slice::from_raw_parts(x, n)),
            }
            0.0
        }
        Sink::Accumulate(kind, out) => {
            match (v, kind) {
                (Val::Scalar(x), ReduceKind::Sum) => out.iter_mut().for_each(|o| *o += x),
                (Val::Scalar(x), ReduceKind::Max) => out.iter_mut().for_each(|o| *o = o.max(x)),
                (Val::Block(x), ReduceKind::Sum) => {
                    out.iter_mut().zip(std::slice::from_raw_parts(x, n)).for_each(|(o, x)| *o += x)
                }
                (Val::Block(x), ReduceKind::Max) => {
                    out.iter_mut().zip(std::slice::from_raw_parts(x, n)).for_each(|(o, x)| *o = o.max(*x))
                }
            }
            0.0
        }
        Sink::Reduce(kind, acc) => match (v, kind) {
            (Val::Scalar(x), ReduceKind::Sum) => acc + x * n as f32,
            (Val::Scalar(x), ReduceKind::Max) => acc.max(x),
            (Val::Block(x), ReduceKind::Sum) => acc + sum(std::slice::from_raw_parts(x, n)),
            (Val::Block(x), ReduceKind::Max) => acc.max(max(std::slice::from_raw_parts(x, n))),
        },
    }
}

/// Read positions `s..s+n` of the row of one input.
#[inline(always)]
unsafe fn load(buf: &[f32], l: &Load, s: usize, n: usize, dst: *mut f32) -> Val {
    if !l.valid {
        return Val::Scalar(l.fill);
    }
    let (lo, hi) = (l.lo.max(s), l.hi.min(s + n));
    if lo >= hi {
        return Val::Scalar(l.fill);
    }
    let at = |j: usize| l.base + j as isize * l.stride;
    if lo == s && hi == s + n {
        if l.stride == 0 {
            return Val::Scalar(*buf.get_unchecked(l.base as usize));
        }
        if l.stride == 1 {
            return Val::Block(buf.as_ptr().offset(at(s)));
        }
    }
    let d = std::slice::from_raw_parts_mut(dst, n);
    if lo > s || hi < s + n {
        d.fill(l.fill);
    }
    for j in lo..hi {
        *d.get_unchecked_mut(j - s) = *buf.get_unchecked(at(j) as usize);
    }
    Val::Block(dst)
}

#[inline(always)]
fn unary(op: UnaryOp, x: &[f32], d: &mut [f32]) {
    match op {
        UnaryOp::Exp2 => d.iter_mut().zip(x).for_each(|(d, x)| *d = math::exp2(*x)),
        UnaryOp::Log2 => d.iter_mut().zip(x).for_each(|(d, x)| *d = math::log2(*x)),
        UnaryOp::Sin => d.iter_mut().zip(x).for_each(|(d, x)| *d = math::sin(*x)),
        UnaryOp::Sqrt => d.iter_mut().zip(x).for_each(|(d, x)| *d = x.sqrt()),
        UnaryOp::Recip => d.iter_mut().zip(x).for_each(|(d, x)| *d = 1.0 / *x),
    }
}

#[inline(always)]
unsafe fn binary(op: BinaryOp, a: Val, b: Val, d: &mut [f32]) {
    let n = d.len();
    macro_rules! apply {
        ($f:expr) => {{
            let f = $f;
            match (a, b) {
                (Val::Block(x), Val::Block(y)) => {
                    let (x, y) = (std::slice::from_raw_parts(x, n), std::slice::from_raw_parts(y, n));
                    d.iter_mut().zip(x).zip(y).for_each(|((d, x), y)| *d = f(*x, *y))
                }
                (Val::Block(x), Val::Scalar(y)) => {
                    d.iter_mut().zip(std::slice::from_raw_parts(x, n)).for_each(|(d, x)| *d = f(*x, y))
                }
                (Val::Scalar(x), Val::Block(y)) => {
                    d.iter_mut().zip(std::slice::from_raw_parts(y, n)).for_each(|(d, y)| *d = f(x, *y))
                }
                (Val::Scalar(x), Val::Scalar(y)) => d.fill(f(x, y)),
            }
        }};
    }
    match op {
        BinaryOp::Add => apply!(|x: f32, y: f32| x + y),
        BinaryOp::Mul => apply!(|x: f32, y: f32| x * y),
        BinaryOp::Mod => apply!(|x: f32, y: f32| x % y),
        BinaryOp::Lt => apply!(|x: f32, y: f32| if x < y { 1.0 } else { 0.0 }),
    }
}

/// Sum with 16 independent accumulators (vectorizes; also more accurate than one chain).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            acc[k] += c[k];
        }
    }
    let mut s = 0f32;
    for v in rest {
        s += v;
    }
    // pairwise combination of the accumulators
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for k in 0..w {
            acc[k] += acc[k + w];
        }
    }
    acc[0] + s
}

#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            acc[k] = acc[k].max(c[k]);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in rest.iter().chain(acc.iter()) {
        m = m.max(*v);
    }
    m
}
