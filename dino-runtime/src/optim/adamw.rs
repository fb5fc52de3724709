//! AdamW (decoupled weight decay), exactly as `torch.optim.AdamW` computes it:
//!
//! ```text
//! w <- w * (1 - lr * wd)                       (decayed parameters only)
//! m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
//! w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! ```
use luminal::prelude::*;

use crate::graph::ops::{add, mul, scale, shift, unary};
use crate::graph::View;

/// AdamW's fixed hyperparameters (PyTorch defaults).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// Per-group scalar inputs, in this order.
pub const SCALARS: &[&str] =
    &["decay", "step_size", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "inv_sqrt_bc2"];

/// Values of [`SCALARS`] for a step; a frozen group gets the identity update.
pub fn scalar_values(c: &AdamWConfig, lr: f32, wd: f32, step: u64, frozen: bool) -> Vec<f32> {
    if frozen {
        return vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0];
    }
    let t = step.max(1) as i32;
    let bc1 = 1.0 - (c.beta1 as f64).powi(t);
    let bc2 = 1.0 - (c.beta2 as f64).powi(t);
    vec![
        1.0 - lr * wd,
        (lr as f64 / bc1) as f32,
        c.beta1,
        1.0 - c.beta1,
        c.beta2,
        1.0 - c.beta2,
        (1.0 / bc2.sqrt()) as f32,
    ]
}

/// The update of one parameter: returns `(new w, [m, v], [new m, new v])`.
pub fn update(
    cx: &mut Graph,
    name: &str,
    w: View,
    g: View,
    s: &[NodeIndex],
    decay: bool,
    c: AdamWConfig,
) -> (NodeIndex, Vec<NodeIndex>, Vec<NodeIndex>) {
    let dims = w.dims();
    let b = |i: usize| View::broadcast(s[i], &dims);
    let m = cx.named_tensor::<()>(&format!("{name}.exp_avg")).id;
    let v = cx.named_tensor::<()>(&format!("{name}.exp_avg_sq")).id;
    let (mv, vv) = (View::contiguous(m, &dims), View::contiguous(v, &dims));
    // m' = b1 m + (1 - b1) g
    let a = mul(cx, mv, b(2));
    let bg = mul(cx, g, b(3));
    let new_m = add(cx, a, bg);
    // v' = b2 v + (1 - b2) g^2
    let gg = mul(cx, g, g);
    let c2 = mul(cx, vv, b(4));
    let d2 = mul(cx, gg, b(5));
    let new_v = add(cx, c2, d2);
    // denom = sqrt(v') / sqrt(bc2) + eps
    let sq = unary(cx, luminal::op::Sqrt, new_v);
    let corrected = mul(cx, sq, b(6));
    let denom = shift(cx, corrected, c.eps);
    let rden = unary(cx, luminal::op::Recip, denom);
    let ratio = mul(cx, new_m, rden);
    let step = mul(cx, ratio, b(1));
    let neg = scale(cx, step, -1.0);
    let base = if decay { mul(cx, w, b(0)) } else { w };
    let new_w = add(cx, base, neg);
    (new_w.id, vec![m, v], vec![new_m.id, new_v.id])
}
