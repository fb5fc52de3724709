//! Raw builders of luminal primitive ops on `View`s.
//!
//! Graph passes (autograd, optimizers) work below the typed `GraphTensor` API: their shapes
//! are only known at graph-build time. These helpers add one primitive each and return the
//! contiguous view of its output. Binary ops, reduces and `Contiguous` write a contiguous buffer
//! in the logical shape of their first input; unary ops map their input's *physical* buffer
//! (luminal 0.2.0 semantics), so [`unary`] materializes non-plain inputs first.
use luminal::op::{self, Constant, ConstantValue, Contiguous, LessThan, MaxReduce, Operator, SumReduce};
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;

use super::view::{is_plain, View};

/// Add an op with one input.
pub fn op1<O: Operator + 'static>(cx: &mut Graph, o: O, a: View) -> NodeIndex {
    cx.add_op(o).input(a.id, 0, a.st).finish()
}

/// Add an op with two inputs.
pub fn op2<O: Operator + 'static>(cx: &mut Graph, o: O, a: View, b: View) -> NodeIndex {
    cx.add_op(o).input(a.id, 0, a.st).input(b.id, 0, b.st).finish()
}

/// A float constant broadcast to `dims`.
pub fn constant(cx: &mut Graph, v: f32, dims: &[Expression]) -> View {
    let id = cx.add_op(Constant(ConstantValue::Float(v), &cx.dyn_map)).finish();
    View::broadcast(id, dims)
}

/// An elementwise binary primitive; the output has the logical dims of `a`.
pub fn binary<O: Operator + 'static>(cx: &mut Graph, o: O, a: View, b: View) -> View {
    debug_assert_eq!(a.dims().len(), b.dims().len(), "binary op rank mismatch");
    let d = a.dims();
    View::contiguous(op2(cx, o, a, b), &d)
}

pub fn add(cx: &mut Graph, a: View, b: View) -> View {
    binary(cx, op::Add, a, b)
}

pub fn mul(cx: &mut Graph, a: View, b: View) -> View {
    binary(cx, op::Mul, a, b)
}

/// `1.0` where `a < b`, else `0.0`.
pub fn less_than(cx: &mut Graph, a: View, b: View) -> View {
    binary(cx, LessThan, a, b)
}

/// `a * s` for a float constant `s`.
pub fn scale(cx: &mut Graph, a: View, s: f32) -> View {
    let c = constant(cx, s, &a.dims());
    mul(cx, a, c)
}

/// `a + s` for a float constant `s`.
pub fn shift(cx: &mut Graph, a: View, s: f32) -> View {
    let c = constant(cx, s, &a.dims());
    add(cx, a, c)
}

/// `a - b`.
pub fn sub(cx: &mut Graph, a: View, b: View) -> View {
    let nb = scale(cx, b, -1.0);
    add(cx, a, nb)
}

/// Materialize a view into a contiguous buffer (no-op for plain views).
pub fn materialize(cx: &mut Graph, a: View) -> View {
    if is_plain(&a.st) {
        return a;
    }
    let d = a.dims();
    View::contiguous(op1(cx, Contiguous, a), &d)
}

/// A unary primitive (Log2, Exp2, Sin, Sqrt, Recip) on the logical values of `a`.
pub fn unary<O: Operator + 'static>(cx: &mut Graph, o: O, a: View) -> View {
    let a = materialize(cx, a);
    let d = a.dims();
    View::contiguous(op1(cx, o, a), &d)
}

/// Sum over one logical axis.
pub fn sum_reduce(cx: &mut Graph, a: View, axis: usize) -> View {
    let mut d = a.dims();
    d.remove(axis);
    View::contiguous(op1(cx, SumReduce(axis), a), &d)
}

/// Max over one logical axis.
pub fn max_reduce(cx: &mut Graph, a: View, axis: usize) -> View {
    let mut d = a.dims();
    d.remove(axis);
    View::contiguous(op1(cx, MaxReduce(axis), a), &d)
}

/// Elementwise minimum, built as `lt(a, b) * a + (1 - lt(a, b)) * b`.
pub fn minimum(cx: &mut Graph, a: View, b: View) -> View {
    let m = less_than(cx, a, b);
    let keep_a = mul(cx, m, a);
    let nm = scale(cx, m, -1.0);
    let not_m = shift(cx, nm, 1.0);
    let keep_b = mul(cx, not_m, b);
    add(cx, keep_a, keep_b)
}

/// Sum of all elements, as a 1-element buffer with no dims.
pub fn sum_all(cx: &mut Graph, a: View) -> View {
    let dims = a.dims();
    if dims.is_empty() {
        return a;
    }
    // (n,): one reduction over the flattened buffer
    let n = dims.iter().skip(1).fold(dims[0], |acc, d| acc * *d);
    let flat = materialize(cx, a).reshaped(&[n]);
    sum_reduce(cx, flat, 0)
}
