//! The precision pass: a storage type for every buffer of a plan, from a [`Policy`] that is
//! data (one type per [`OpClass`]).
//!
//! ```text
//!   steps of a plan ──classify──► OpClass per buffer ──Policy──► DType per buffer ──► arena layout
//!                                                                                      (bytes per
//!   State        inputs, kept outputs, constants: weights (the fp32 masters),           Storage)
//!                optimizer state, teacher, center, crops, the loss          always f32
//!   Reduction    a sum/max over an axis or over the ranks (statistics, norms,
//!                the loss terms, all-reduced gradients)                          f32
//!   Gradient     reaches a kept output through elementwise steps only (a
//!                weight's gradient as accumulated, the update's inputs)          f32
//!   GemmOutput   a contraction's result (activations, attention scores)          bf16 under Bf16
//!   GemmOperand  elementwise result read by contractions only (GELU output)      bf16 under Bf16
//!   Normalized   row-normalized result (softmax, LayerNorm) a contraction reads  bf16 under Bf16
//!   Elementwise  anything else (the residual stream and its gradient)            f32
//! ```
//!
//! Arithmetic inside every kernel stays f32: a kernel loads its sources in their storage type,
//! computes in f32 and stores its buffer's type. Under [`Precision::Bf16`] contractions also
//! read their f32 sources as bf16 ([`GemmPlan::operands`](super::GemmPlan)), as cuBLASLt reads
//! a bf16 copy of each weight, with f32 accumulation.
//!
//! A backend that stores only f32 (the CPU) plans with [`Storage::F32`] and emulates bf16 by
//! rounding every bf16 store to the nearest bf16 ([`round_bf16`]), so the numerics of a bf16
//! plan are tested without a GPU.
use std::fmt;
use std::str::FromStr;

use luminal::prelude::*;

use super::build::{DType, Loc, Step, Work};
use crate::autograd::Prim;
use crate::error::{Error, Result};

/// The precision a run asks for: `dino train --precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Every buffer f32.
    #[default]
    Fp32,
    /// Contractions and the activations they produce and read in bf16; state, statistics,
    /// gradients and reductions in f32 (the table above).
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::Fp32, Precision::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Precision> {
        Precision::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| Error::Config {
            what: format!("precision `{s}`"),
            why: "the precisions are fp32 and bf16".into(),
        })
    }
}

/// What a buffer is, for the precision policy (the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpClass {
    State,
    Reduction,
    Gradient,
    GemmOutput,
    GemmOperand,
    Normalized,
    Elementwise,
}

impl OpClass {
    pub const ALL: [OpClass; 7] = [
        OpClass::State,
        OpClass::Reduction,
        OpClass::Gradient,
        OpClass::GemmOutput,
        OpClass::GemmOperand,
        OpClass::Normalized,
        OpClass::Elementwise,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpClass::State => "state",
            OpClass::Reduction => "reduction",
            OpClass::Gradient => "gradient",
            OpClass::GemmOutput => "gemm-output",
            OpClass::GemmOperand => "gemm-operand",
            OpClass::Normalized => "normalized",
            OpClass::Elementwise => "elementwise",
        }
    }
}

impl fmt::Display for OpClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OpClass {
    type Err = Error;
    fn from_str(s: &str) -> Result<OpClass> {
        OpClass::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| Error::Config {
            what: format!("op class `{s}`"),
            why: format!("the classes are {}", OpClass::ALL.map(OpClass::name).join(", ")),
        })
    }
}

/// The storage type of each [`OpClass`]: a [`Precision`]'s defaults, then overrides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub precision: Precision,
    /// Classes whose type differs from the precision's default, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<(OpClass, DType)>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::of(Precision::Fp32)
    }
}

impl Policy {
    /// The defaults of `precision` (the module's table).
    pub fn of(precision: Precision) -> Policy {
        Policy { precision, overrides: vec![] }
    }

    /// `class` stored as `dtype`. State is always f32 (the masters the optimizer updates).
    pub fn with(mut self, class: OpClass, dtype: DType) -> Result<Policy> {
        if class == OpClass::State && dtype != DType::F32 {
            return Err(Error::Config {
                what: format!("precision override `state={dtype}`"),
                why: "weights, optimizer state, teacher, center and the loss stay f32".into(),
            });
        }
        self.overrides.retain(|(c, _)| *c != class);
        self.overrides.push((class, dtype));
        Ok(self)
    }

    /// Overrides written `class=dtype,class=dtype` (`gemm-output=f32,normalized=f32`).
    pub fn with_overrides(mut self, text: &str) -> Result<Policy> {
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (c, d) = item.split_once('=').ok_or_else(|| Error::Config {
                what: format!("precision override `{item}`"),
                why: "write class=dtype, e.g. gemm-output=f32".into(),
            })?;
            self = self.with(c.trim().parse()?, d.trim().parse()?)?;
        }
        Ok(self)
    }

    /// The storage type of `class`.
    pub fn dtype(&self, class: OpClass) -> DType {
        if let Some((_, d)) = self.overrides.iter().rev().find(|(c, _)| *c == class) {
            return *d;
        }
        match (self.precision, class) {
            (Precision::Bf16, OpClass::GemmOutput | OpClass::GemmOperand | OpClass::Normalized) => DType::Bf16,
            _ => DType::F32,
        }
    }

    /// The type contractions read their sources in: `gemm-operand`'s (so `gemm-operand=f32`
    /// makes every product read f32, whatever `gemm-output` stores).
    pub fn gemm_reads(&self) -> DType {
        self.dtype(OpClass::GemmOperand)
    }

    /// Does every class store f32 (and so every product read f32)?
    pub fn is_fp32(&self) -> bool {
        OpClass::ALL.iter().all(|c| self.dtype(*c) == DType::F32)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.precision)?;
        for (c, d) in &self.overrides {
            write!(f, ", {c}={d}")?;
        }
        Ok(())
    }
}

/// How a backend holds buffers: each type at its own size, or every buffer as f32 (narrower
/// types emulated by rounding on store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Storage {
    #[default]
    Native,
    F32,
}

impl Storage {
    /// Bytes one element of `d` takes.
    pub fn elem_bytes(self, d: DType) -> usize {
        match self {
            Storage::Native => d.size(),
            Storage::F32 => 4,
        }
    }
}

/// The nearest bf16 to `x` (ties to even), as an f32; NaN stays NaN, overflow goes to ±inf.
pub fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// [`round_bf16`] of every element.
pub fn round_bf16_slice(v: &mut [f32]) {
    for x in v {
        *x = round_bf16(*x);
    }
}

/// The class of every step (inputs included, as [`OpClass::State`]).
pub fn classify(steps: &[Step], cx: &Graph) -> Vec<OpClass> {
    let n = steps.len();
    let mut consumers: Vec<Vec<usize>> = vec![vec![]; n];
    for (i, s) in steps.iter().enumerate() {
        for &si in &s.srcs {
            consumers[si].push(i);
        }
    }
    let reduces = |s: &Step| match &s.work {
        Work::Fused(k) => k.reduce.is_some(),
        // a sum over the ranks
        Work::AllReduce(_) => true,
        Work::Other => matches!(
            cx.graph.node_weight(s.node).and_then(|op| Prim::of(op.as_ref())),
            Some(Prim::SumReduce(_) | Prim::MaxReduce(_))
        ),
        _ => false,
    };
    let state = |s: &Step| matches!(s.work, Work::Input { .. } | Work::Value(_)) || matches!(s.loc, Loc::Kept(_));
    // the gradient path: back from every kept output through elementwise steps and into the
    // contractions that feed them (not past a contraction, a reduction or state)
    let mut gradient = vec![false; n];
    let mut stack: Vec<usize> = (0..n).filter(|&i| matches!(steps[i].loc, Loc::Kept(_))).collect();
    while let Some(i) = stack.pop() {
        for &si in &steps[i].srcs {
            let s = &steps[si];
            if gradient[si] || state(s) || reduces(s) {
                continue;
            }
            gradient[si] = true;
            if !matches!(s.work, Work::Gemm(_)) {
                stack.push(si);
            }
        }
    }
    let is_gemm = |j: usize| matches!(steps[j].work, Work::Gemm(_));
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if state(s) {
                OpClass::State
            } else if reduces(s) {
                OpClass::Reduction
            } else if gradient[i] {
                OpClass::Gradient
            } else if is_gemm(i) {
                OpClass::GemmOutput
            } else if !consumers[i].is_empty() && consumers[i].iter().all(|&j| is_gemm(j)) {
                OpClass::GemmOperand
            } else if matches!(&s.work, Work::Fused(k) if !k.stages.is_empty())
                && consumers[i].iter().any(|&j| is_gemm(j))
            {
                OpClass::Normalized
            } else {
                OpClass::Elementwise
            }
        })
        .collect()
}

/// Give every step of `steps` its storage type under `policy`, and every contraction the type
/// it reads its sources in; the classes, per step.
pub fn assign(steps: &mut [Step], cx: &Graph, policy: &Policy) -> Vec<OpClass> {
    let classes = classify(steps, cx);
    for (s, c) in steps.iter_mut().zip(&classes) {
        s.dtype = policy.dtype(*c);
        if let Work::Gemm(g) = &mut s.work {
            g.operands = policy.gemm_reads();
        }
    }
    classes
}

/// Per class: buffers, their elements, and the type they got (`DINO_DEBUG=1` prints it).
pub fn summary(steps: &[Step], classes: &[OpClass]) -> Vec<(OpClass, usize, usize, DType)> {
    let mut rows: Vec<(OpClass, usize, usize, DType)> = vec![];
    for (s, c) in steps.iter().zip(classes) {
        match rows.iter_mut().find(|r| r.0 == *c) {
            Some(r) => {
                r.1 += 1;
                r.2 += s.out_len;
            }
            None => rows.push((*c, 1, s.out_len, s.dtype)),
        }
    }
    rows.sort_by_key(|r| r.0);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1)
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2.0 * 2f32.powi(-7));
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 1.0 + 2f32.powi(-7));
        assert_eq!(round_bf16(-2.5), -2.5);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
        // every rounded value has 8 significant bits: the low 16 bits are zero
        for x in [0.1f32, 3.14159, -1e-30, 6.02e23] {
            assert_eq!(round_bf16(x).to_bits() & 0xffff, 0, "{x}");
            assert!((round_bf16(x) - x).abs() <= x.abs() * 2f32.powi(-9), "{x}");
        }
    }

    #[test]
    fn policies_follow_the_table_and_take_overrides() {
        let fp32 = Policy::of(Precision::Fp32);
        assert!(OpClass::ALL.iter().all(|c| fp32.dtype(*c) == DType::F32));
        assert!(fp32.is_fp32());
        let bf16 = Policy::of(Precision::Bf16);
        let narrow: Vec<OpClass> = OpClass::ALL.into_iter().filter(|c| bf16.dtype(*c) == DType::Bf16).collect();
        assert_eq!(narrow, [OpClass::GemmOutput, OpClass::GemmOperand, OpClass::Normalized]);
        assert_eq!(bf16.gemm_reads(), DType::Bf16);
        let p = bf16.clone().with_overrides("gemm-output=f32, normalized = f32").unwrap();
        assert_eq!((p.dtype(OpClass::GemmOutput), p.dtype(OpClass::Normalized)), (DType::F32, DType::F32));
        assert_eq!(p.dtype(OpClass::GemmOperand), DType::Bf16);
        assert_eq!(p.to_string(), "bf16, gemm-output=f32, normalized=f32");
        // the last override of a class wins; overrides can narrow an fp32 policy too
        let q = fp32.with_overrides("elementwise=bf16,elementwise=f32,gemm-output=bf16").unwrap();
        assert_eq!((q.dtype(OpClass::Elementwise), q.dtype(OpClass::GemmOutput)), (DType::F32, DType::Bf16));
        assert_eq!(q.overrides.len(), 2);
        // state stays f32; bad text names itself
        let e = bf16.clone().with_overrides("state=bf16").unwrap_err().to_string();
        assert!(e.contains("state=bf16"), "{e}");
        for (bad, named) in [("gemm-output", "`gemm-output`"), ("gemm=f32", "`gemm`"), ("gemm-output=f16", "`f16`")] {
            let e = bf16.clone().with_overrides(bad).unwrap_err().to_string();
            assert!(e.contains(named), "{bad}: {e}");
        }
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert!("fp16".parse::<Precision>().unwrap_err().to_string().contains("fp16"));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
    }
}
