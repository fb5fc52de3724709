//! Gradient norms and clipping, in the graph: DINO's per-parameter clipping or DINOv2's
//! per-module clipping.
//!
//! ```text
//!  per parameter (DINO `clip_gradients`):   g_i * min(1, c / (|g_i| + 1e-6))
//!  per module (DINOv2 `clip_grad_norm_` on each of backbone, head, ibot_head):
//!      n_M = sqrt(sum over i in M of |g_i|^2)     g_i * min(1, c / (n_M + 1e-6))
//! ```
use luminal::prelude::*;

use crate::graph::ops::{add, constant, minimum, mul, scale, shift, sum_all, unary};
use crate::graph::View;

/// What a clipping norm is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipScope {
    /// Each gradient against its own norm (DINO).
    #[default]
    Parameter,
    /// The gradients of each top-level module (the first segment of the parameter's name:
    /// `backbone`, `head`, `ibot_head`) against their joint norm (DINOv2).
    Module,
}

impl ClipScope {
    /// The module a parameter belongs to under this scope (its whole name per parameter).
    pub fn unit_of(self, name: &str) -> &str {
        match self {
            ClipScope::Parameter => name,
            ClipScope::Module => name.split('.').next().unwrap_or(name),
        }
    }
}

/// `sum(g^2)` of one gradient, a 1-element view.
pub fn squared_norm(cx: &mut Graph, g: View) -> View {
    let sq = mul(cx, g, g);
    sum_all(cx, sq)
}

/// `min(1, clip / (sqrt(sq) + 1e-6))`, PyTorch's clipping coefficient, a 1-element view.
fn factor(cx: &mut Graph, sq: View, clip: f32) -> View {
    let norm = unary(cx, luminal::op::Sqrt, sq);
    let den = shift(cx, norm, 1e-6);
    let inv = unary(cx, luminal::op::Recip, den);
    let coef = scale(cx, inv, clip);
    let one = constant(cx, 1.0, &[]);
    minimum(cx, coef, one)
}

/// Clip `grads` (with `squares[i] = sum(grads[i]^2)`, parameters `names`) at `clip` over
/// `scope`. The units keep their first parameter's order; their squared norms are summed in
/// parameter order.
pub fn clip(
    cx: &mut Graph,
    grads: &[View],
    squares: &[View],
    names: &[&str],
    clip: f32,
    scope: ClipScope,
) -> Vec<View> {
    let mut units: Vec<(&str, View)> = vec![];
    for (name, sq) in names.iter().zip(squares) {
        let unit = scope.unit_of(name);
        match units.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, acc)) => *acc = add(cx, *acc, *sq),
            None => units.push((unit, *sq)),
        }
    }
    let factors: Vec<(&str, View)> = units.into_iter().map(|(u, sq)| (u, factor(cx, sq, clip))).collect();
    grads
        .iter()
        .zip(names)
        .map(|(g, name)| {
            let unit = scope.unit_of(name);
            let f = factors.iter().find(|(u, _)| *u == unit).expect("every parameter has a unit").1;
            let dims = g.dims();
            mul(cx, *g, View::broadcast(f.id, &dims))
        })
        .collect()
}

/// `sqrt(sum of squared norms)`, a 1-element view.
pub fn total_norm(cx: &mut Graph, squares: &[View]) -> View {
    let mut acc = squares[0];
    for s in &squares[1..] {
        acc = add(cx, acc, *s);
    }
    unary(cx, luminal::op::Sqrt, acc)
}
