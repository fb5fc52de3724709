//! The expression IR of fused kernels, shared by every backend.
//!
//! A fused kernel evaluates one [`Program`] at every point of an iteration space: a short
//! SSA list of primitive operations whose leaves are loads (an input buffer read through a
//! strided view) and constants. The CPU backend interprets it a block of elements at a time;
//! the CUDA backend prints it as C source. A kernel may end in a reduction over one axis of
//! its iteration space.
use std::fmt;

/// An SSA register: the index of the instruction that defines it.
pub type Reg = u16;

/// The unary primitives of luminal 0.2.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum UnaryOp {
    Log2,
    Exp2,
    Sin,
    Sqrt,
    Recip,
}

/// The binary primitives of luminal 0.2.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BinaryOp {
    Add,
    Mul,
    /// C `fmodf` semantics (the sign of the dividend).
    Mod,
    /// `1.0` if `a < b` else `0.0`.
    Lt,
}

/// How a kernel reduces its last-evaluated values along its reduce axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ReduceKind {
    Sum,
    Max,
}

impl ReduceKind {
    /// The identity element of the reduction.
    pub fn identity(self) -> f32 {
        match self {
            ReduceKind::Sum => 0.0,
            ReduceKind::Max => f32::NEG_INFINITY,
        }
    }
}

/// One SSA instruction.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Instr {
    /// Read input `i` at the current point (zero where its view is padded or sliced away).
    Load(u16),
    Const(f32),
    Unary(UnaryOp, Reg),
    Binary(BinaryOp, Reg, Reg),
    /// The value of stage `k` for the current row (see [`Stage`]).
    Stage(u16),
}

/// A reduction over the whole current row (the innermost axis of the iteration space)
/// computed before the kernel's main program: LayerNorm's mean and variance, softmax's max
/// and sum. Its value is a scalar per row; later stages and the main program read it with
/// [`Instr::Stage`].
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub program: Program,
    pub kind: ReduceKind,
}

/// A straight-line program; its value is the value of the last instruction.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Program {
    pub instrs: Vec<Instr>,
}

impl Program {
    /// The register holding the result.
    pub fn result(&self) -> Reg {
        (self.instrs.len() - 1) as Reg
    }

    /// For each register, the index of its last use (its own index if never used; the result
    /// is used at the end).
    pub fn last_uses(&self) -> Vec<usize> {
        let mut last: Vec<usize> = (0..self.instrs.len()).collect();
        for (i, ins) in self.instrs.iter().enumerate() {
            match *ins {
                Instr::Unary(_, a) => last[a as usize] = i,
                Instr::Binary(_, a, b) => {
                    last[a as usize] = i;
                    last[b as usize] = i;
                }
                _ => {}
            }
        }
        if let Some(l) = last.last_mut() {
            *l = usize::MAX;
        }
        last
    }

    /// The same program with every load and stage reference renumbered.
    pub fn remap(&self, load: impl Fn(u16) -> Instr, stage: impl Fn(u16) -> u16) -> Program {
        let instrs = self
            .instrs
            .iter()
            .map(|i| match *i {
                Instr::Load(k) => load(k),
                Instr::Stage(k) => Instr::Stage(stage(k)),
                other => other,
            })
            .collect();
        Program { instrs }
    }

    /// Number of inputs read (one past the highest load index).
    pub fn n_inputs(&self) -> usize {
        self.instrs
            .iter()
            .filter_map(|i| if let Instr::Load(k) = i { Some(*k as usize + 1) } else { None })
            .max()
            .unwrap_or(0)
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ins) in self.instrs.iter().enumerate() {
            match ins {
                Instr::Load(k) => writeln!(f, "  r{i} = in{k}")?,
                Instr::Stage(k) => writeln!(f, "  r{i} = stage{k}")?,
                Instr::Const(c) => writeln!(f, "  r{i} = {c:?}")?,
                Instr::Unary(op, a) => writeln!(f, "  r{i} = {op:?}(r{a})")?,
                Instr::Binary(op, a, b) => writeln!(f, "  r{i} = {op:?}(r{a}, r{b})")?,
            }
        }
        Ok(())
    }
}

/// Builds a [`Program`] with common subexpressions shared and constants folded.
#[derive(Default)]
pub struct ProgramBuilder {
    program: Program,
    seen: rustc_hash::FxHashMap<Key, Reg>,
}

#[derive(PartialEq, Eq, Hash)]
enum Key {
    Load(u16),
    Const(u32),
    Unary(UnaryOp, Reg),
    Binary(BinaryOp, Reg, Reg),
}

impl ProgramBuilder {
    fn push(&mut self, key: Key, ins: Instr) -> Reg {
        if let Some(&r) = self.seen.get(&key) {
            return r;
        }
        let r = self.program.instrs.len() as Reg;
        self.program.instrs.push(ins);
        self.seen.insert(key, r);
        r
    }

    fn constant_of(&self, r: Reg) -> Option<f32> {
        match self.program.instrs[r as usize] {
            Instr::Const(c) => Some(c),
            _ => None,
        }
    }

    pub fn load(&mut self, input: u16) -> Reg {
        self.push(Key::Load(input), Instr::Load(input))
    }

    pub fn constant(&mut self, c: f32) -> Reg {
        self.push(Key::Const(c.to_bits()), Instr::Const(c))
    }

    pub fn unary(&mut self, op: UnaryOp, a: Reg) -> Reg {
        if let Some(c) = self.constant_of(a) {
            return self.constant(eval_unary(op, c));
        }
        self.push(Key::Unary(op, a), Instr::Unary(op, a))
    }

    /// `Some(x)` when `r` is `x * -1` (or `-1 * x`).
    fn negation_of(&self, r: Reg) -> Option<Reg> {
        match self.program.instrs[r as usize] {
            Instr::Binary(BinaryOp::Mul, x, m) if self.constant_of(m) == Some(-1.0) => Some(x),
            Instr::Binary(BinaryOp::Mul, m, x) if self.constant_of(m) == Some(-1.0) => Some(x),
            _ => None,
        }
    }

    /// Add `op(a, b)`, folding constants and the identities `x * 1 = x`, `x + 0 = x`,
    /// `x + (-x) = 0` and `x * 0 = 0` (the last two as in fast-math: they ignore infinities and
    /// NaN, which is what lets `x - detach(x)` vanish from forward kernels).
    pub fn binary(&mut self, op: BinaryOp, a: Reg, b: Reg) -> Reg {
        if op == BinaryOp::Add && (self.negation_of(b) == Some(a) || self.negation_of(a) == Some(b)) {
            return self.constant(0.0);
        }
        if op == BinaryOp::Mul && (self.constant_of(a) == Some(0.0) || self.constant_of(b) == Some(0.0)) {
            return self.constant(0.0);
        }
        match (self.constant_of(a), self.constant_of(b)) {
            (Some(x), Some(y)) => return self.constant(eval_binary(op, x, y)),
            // x * 1 = x and x + 0 = x (the latter differs only in the sign of a zero)
            (_, Some(y)) if (op == BinaryOp::Mul && y == 1.0) || (op == BinaryOp::Add && y == 0.0) => return a,
            (Some(x), _) if (op == BinaryOp::Mul && x == 1.0) || (op == BinaryOp::Add && x == 0.0) => return b,
            _ => {}
        }
        self.push(Key::Binary(op, a, b), Instr::Binary(op, a, b))
    }

    /// Finish; the value of `result` becomes the program's value.
    pub fn finish(mut self, result: Reg) -> Program {
        if result as usize != self.program.instrs.len() - 1 {
            // Make the result the last instruction (a copy through `x * 1` would be folded, so
            // move it by renumbering instead).
            self.program = reorder_result_last(self.program, result);
        }
        self.program
    }
}

/// Renumber so `result` is last, dropping instructions it does not depend on.
fn reorder_result_last(p: Program, result: Reg) -> Program {
    let n = p.instrs.len();
    let mut needed = vec![false; n];
    needed[result as usize] = true;
    for i in (0..n).rev() {
        if !needed[i] {
            continue;
        }
        match p.instrs[i] {
            Instr::Unary(_, a) => needed[a as usize] = true,
            Instr::Binary(_, a, b) => {
                needed[a as usize] = true;
                needed[b as usize] = true;
            }
            _ => {}
        }
    }
    let mut map = vec![0 as Reg; n];
    let mut out = Program::default();
    let order = (0..n).filter(|&i| needed[i] && i != result as usize).chain([result as usize]);
    for i in order {
        map[i] = out.instrs.len() as Reg;
        out.instrs.push(match p.instrs[i] {
            Instr::Unary(op, a) => Instr::Unary(op, map[a as usize]),
            Instr::Binary(op, a, b) => Instr::Binary(op, map[a as usize], map[b as usize]),
            other => other,
        });
    }
    out
}

/// Reference scalar semantics of a unary primitive (luminal's CPU semantics).
pub fn eval_unary(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Log2 => x.log2(),
        UnaryOp::Exp2 => x.exp2(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Recip => x.recip(),
    }
}

/// Reference scalar semantics of a binary primitive.
pub fn eval_binary(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Mul => a * b,
        BinaryOp::Mod => a % b,
        BinaryOp::Lt => (a < b) as i32 as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_shares_and_folds() {
        let mut b = ProgramBuilder::default();
        let x = b.load(0);
        let two = b.constant(2.0);
        let one = b.constant(1.0);
        let y = b.binary(BinaryOp::Mul, x, one); // folded to x
        assert_eq!(y, x);
        let s1 = b.binary(BinaryOp::Add, x, two);
        let s2 = b.binary(BinaryOp::Add, x, two); // shared
        assert_eq!(s1, s2);
        let c = b.unary(UnaryOp::Sqrt, two); // folded
        let out = b.binary(BinaryOp::Mul, s1, c);
        let p = b.finish(out);
        assert_eq!(p.n_inputs(), 1);
        assert!(matches!(p.instrs.last(), Some(Instr::Binary(BinaryOp::Mul, _, _))));
    }

    #[test]
    fn result_moved_last() {
        let mut b = ProgramBuilder::default();
        let x = b.load(0);
        let y = b.load(1);
        let _unused = b.binary(BinaryOp::Add, x, y);
        let p = b.finish(x);
        assert_eq!(p.instrs, vec![Instr::Load(0)]);
    }
}
