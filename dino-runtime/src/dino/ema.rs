//! The momentum (EMA) teacher, in the graph.
use luminal::prelude::*;

use crate::graph::ops::{add, mul, scale, shift};
use crate::graph::View;

/// `teacher' = m teacher + (1 - m) student'` for every pair of parameters, with `m` a
/// 1-element input (it follows a schedule) and `student'` the student's *updated* values
/// (DINO updates the teacher after the optimizer step). Returns the new teacher nodes.
///
/// PyTorch equivalent: the `with torch.no_grad()` EMA loop of DINO's `train_one_epoch`.
pub fn ema_update(
    cx: &mut Graph,
    teacher: &[(NodeIndex, Vec<usize>)],
    student_new: &[NodeIndex],
    momentum: NodeIndex,
) -> Vec<NodeIndex> {
    let m = View::contiguous(momentum, &[]);
    let nm = scale(cx, m, -1.0);
    let one_minus = shift(cx, nm, 1.0); // 1 - m, one element
    teacher
        .iter()
        .zip(student_new)
        .map(|((t, shape), s)| {
            let dims: Vec<_> = shape.iter().map(|d| (*d).into()).collect();
            let kept = mul(cx, View::contiguous(*t, &dims), View::broadcast(momentum, &dims));
            let fresh = mul(cx, View::contiguous(*s, &dims), View::broadcast(one_minus.id, &dims));
            add(cx, kept, fresh).id
        })
        .collect()
}
