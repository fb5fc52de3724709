//! Gradient norms and DINO's per-parameter clipping, in the graph.
use luminal::prelude::*;

use crate::graph::ops::{add, constant, minimum, mul, scale, shift, sum_all, unary};
use crate::graph::View;

/// `sum(g^2)` of one gradient, a 1-element view.
pub fn squared_norm(cx: &mut Graph, g: View) -> View {
    let sq = mul(cx, g, g);
    sum_all(cx, sq)
}

/// DINO's `clip_gradients`: each parameter's gradient is scaled by
/// `min(1, clip / (||g|| + 1e-6))`, its own norm, not the global one. `sq` is `sum(g^2)`.
pub fn clip_per_parameter(cx: &mut Graph, g: View, sq: View, clip: f32) -> View {
    let norm = unary(cx, luminal::op::Sqrt, sq);
    let den = shift(cx, norm, 1e-6);
    let inv = unary(cx, luminal::op::Recip, den);
    let coef = scale(cx, inv, clip);
    let one = constant(cx, 1.0, &[]);
    let factor = minimum(cx, coef, one);
    let dims = g.dims();
    mul(cx, g, View::broadcast(factor.id, &dims))
}

/// `sqrt(sum of squared norms)`, a 1-element view.
pub fn total_norm(cx: &mut Graph, squares: &[View]) -> View {
    let mut acc = squares[0];
    for s in &squares[1..] {
        acc = add(cx, acc, *s);
    }
    unary(cx, luminal::op::Sqrt, acc)
}
