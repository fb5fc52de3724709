//! The gradient of every luminal primitive: one table, one arm per primitive.
//!
//! Notation: `g` is the gradient of the node's output buffer, `x_i` its i-th input as read
//! through the edge view `st_i`, `y` its output. Every rule returns, per differentiable input,
//! a gradient in the logical space of that input's edge view; the caller un-views it. Unary
//! ops are the exception: luminal 0.2.0 applies them to the input's *physical* buffer,
//! ignoring the edge view, so their rules work in buffer space and need no un-viewing.
use std::f32::consts::{FRAC_PI_2, LN_2};

use luminal::op::{Recip, Sin};
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;

use super::prim::Prim;
use crate::graph::ops::{less_than, mul, scale, shift, sub, unary};
use crate::graph::view::{logical_dims, View};

/// Where a rule's gradient lives.
pub enum Space {
    /// In the logical space of the input's edge view: un-view it.
    Logical,
    /// Already in the input's buffer space (unary ops).
    Buffer,
}

/// Gradient contributions of node `n` (primitive `prim`, output gradient `g`) to the inputs
/// listed in `want`. `phys_in0` is the buffer dims of input 0 (used by unary rules).
pub fn contributions(
    cx: &mut Graph,
    prim: Prim,
    n: NodeIndex,
    g: View,
    inputs: &[View],
    want: &[bool],
    phys_in0: Option<&[Expression]>,
) -> Vec<(usize, View, Space)> {
    let mut out = vec![];
    match prim {
        // ---- leaves -----------------------------------------------------------------------
        Prim::Function | Prim::Constant => {}

        // ---- unary, in buffer space: x and y are the physical buffers ------------------------
        Prim::Log2 | Prim::Exp2 | Prim::Sin | Prim::Sqrt | Prim::Recip => {
            if !want[0] {
                return out;
            }
            let pd = phys_in0.expect("unary input has a buffer shape");
            let x = View::contiguous(inputs[0].id, pd);
            let y = View::contiguous(n, pd);
            let d = match prim {
                // d/dx log2(x) = 1 / (x ln 2)
                Prim::Log2 => {
                    let t = scale(cx, x, LN_2);
                    unary(cx, Recip, t)
                }
                // d/dx 2^x = 2^x ln 2
                Prim::Exp2 => scale(cx, y, LN_2),
                // d/dx sin(x) = cos(x) = sin(x + pi/2)
                Prim::Sin => {
                    let t = shift(cx, x, FRAC_PI_2);
                    unary(cx, Sin, t)
                }
                // d/dx sqrt(x) = 1 / (2 sqrt(x))
                Prim::Sqrt => {
                    let r = unary(cx, Recip, y);
                    scale(cx, r, 0.5)
                }
                // d/dx 1/x = -1/x^2 = -y^2
                _ => {
                    let yy = mul(cx, y, y);
                    scale(cx, yy, -1.0)
                }
            };
            let g = if g.dims() == pd { g } else { View::contiguous(g.id, pd) };
            out.push((0, mul(cx, g, d), Space::Buffer));
        }

        // ---- binary ----------------------------------------------------------------------
        // d(a+b) = g, g
        Prim::Add => {
            for i in 0..2 {
                if want[i] {
                    out.push((i, g, Space::Logical));
                }
            }
        }
        // d(a*b) = g*b, g*a. The other operand keeps its edge view (never materialized), so
        // the product followed by the un-view's sum stays a Mul->SumReduce the GEMM pass sees.
        Prim::Mul => {
            for i in 0..2 {
                if want[i] {
                    out.push((i, mul(cx, g, inputs[1 - i]), Space::Logical));
                }
            }
        }
        // fmod(a, b) = a - b * trunc(a / b): d/da = 1, d/db = -trunc(a / b) = (y - a) / b.
        Prim::Mod => {
            if want[0] {
                out.push((0, g, Space::Logical));
            }
            if want[1] {
                let dims = inputs[0].dims();
                let y = View::contiguous(n, &dims);
                let diff = sub(cx, y, inputs[0]);
                let rb = unary(cx, Recip, inputs[1]);
                let q = mul(cx, diff, rb);
                out.push((1, mul(cx, g, q), Space::Logical));
            }
        }
        // Piecewise constant: zero gradient almost everywhere.
        Prim::LessThan => {}

        // ---- reductions ------------------------------------------------------------------
        // d sum_d(x) = g broadcast along d.
        Prim::SumReduce(d) => {
            if want[0] {
                let l = logical_dims(&inputs[0].st);
                out.push((0, g.expand(d, l[d]), Space::Logical));
            }
        }
        // d max_d(x) = g broadcast along d, where x equals the max. Since x <= max everywhere,
        // (x == max) = 1 - (x < max); ties each receive the full gradient.
        Prim::MaxReduce(d) => {
            if want[0] {
                let l = logical_dims(&inputs[0].st);
                let mut ydims = l.clone();
                ydims.remove(d);
                let y = View::contiguous(n, &ydims).expand(d, l[d]);
                let below = less_than(cx, inputs[0], y);
                let nb = scale(cx, below, -1.0);
                let at_max = shift(cx, nb, 1.0);
                out.push((0, mul(cx, g.expand(d, l[d]), at_max), Space::Logical));
            }
        }

        // ---- movement --------------------------------------------------------------------
        Prim::Contiguous => {
            if want[0] {
                out.push((0, g, Space::Logical));
            }
        }
        // Stops the gradient.
        Prim::Detach => {}
    }
    out
}
