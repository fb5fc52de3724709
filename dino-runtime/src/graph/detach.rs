//! `Detach`: identity forward, no gradient (PyTorch's `.detach()`).
use luminal::op::{Contiguous, InputTensor, Operator};
use luminal::prelude::*;

/// Materializes its input's view like `Contiguous`; autograd passes no gradient through it.
///
/// With it a composite can carry an exact gradient of its own, without differentiating
/// through its forward approximation: `y = detach(f(x)) + (x - detach(x)) * detach(f'(x))`
/// has the value `f(x)` and the gradient `f'(x)`. The fusion pass sees `Detach` as a copy, so
/// the `x - detach(x)` term folds away in forward kernels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detach;

impl Operator for Detach {
    fn process(&mut self, inp: Vec<(InputTensor, ShapeTracker)>) -> Vec<Tensor> {
        Contiguous.process(inp)
    }
}

/// `x.detach()`: the same values, no gradient.
pub fn detach<S: Shape>(x: GraphTensor<S>) -> GraphTensor<S> {
    let id = x.graph().add_op(Detach).input(x.id, 0, x.shape).finish();
    GraphTensor::from_id(id, x.shape.contiguous(), x.graph_ref)
}

/// A composite with a custom gradient: value `value`, gradient `grad * dy` w.r.t. `x`.
pub fn with_gradient<S: Shape>(x: GraphTensor<S>, value: GraphTensor<S>, grad: GraphTensor<S>) -> GraphTensor<S> {
    detach(value) + (x - detach(x)) * detach(grad)
}
