//! SGD with momentum and (coupled) weight decay, as `torch.optim.SGD` computes it
//! (dampening 0, no Nesterov):
//!
//! ```text
//! g <- g + wd w                                (decayed parameters only)
//! buf <- momentum buf + g                      (the first step's buffer is g)
//! w <- w - lr buf
//! ```
use luminal::prelude::*;

use crate::graph::ops::{add, mul, scale};
use crate::graph::View;

/// SGD's fixed hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    pub momentum: f32,
}

/// Per-group scalar inputs, in this order.
pub const SCALARS: &[&str] = &["lr", "weight_decay", "momentum", "grad_scale"];

/// Values of [`SCALARS`] for a step; a frozen group gets the identity update.
pub fn scalar_values(c: &SgdConfig, lr: f32, wd: f32, frozen: bool) -> Vec<f32> {
    if frozen {
        vec![0.0, 0.0, 1.0, 0.0]
    } else {
        vec![lr, wd, c.momentum, 1.0]
    }
}

/// The update of one parameter: returns `(new w, [buf], [new buf])`.
pub fn update(
    cx: &mut Graph,
    name: &str,
    w: View,
    g: View,
    s: &[NodeIndex],
    decay: bool,
) -> (NodeIndex, Vec<NodeIndex>, Vec<NodeIndex>) {
    let dims = w.dims();
    let b = |i: usize| View::broadcast(s[i], &dims);
    let buf = cx.named_tensor::<()>(&format!("{name}.momentum_buffer")).id;
    let bv = View::contiguous(buf, &dims);
    let g = if decay {
        let wd = mul(cx, w, b(1));
        add(cx, g, wd)
    } else {
        g
    };
    let g = mul(cx, g, b(3));
    let kept = mul(cx, bv, b(2));
    let new_buf = add(cx, kept, g);
    let step = mul(cx, new_buf, b(0));
    let neg = scale(cx, step, -1.0);
    let new_w = add(cx, w, neg);
    (new_w.id, vec![buf], vec![new_buf.id])
}
