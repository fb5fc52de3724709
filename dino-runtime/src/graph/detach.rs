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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::backward;
    use crate::graph::{data, ops::sum_all, View};

    /// `sum(x * detach(x))` has gradient `x` (not `2x`), and `with_gradient` takes its
    /// gradient from `grad`, its value from `value`.
    #[test]
    fn detach_stops_the_gradient() {
        let mut cx = Graph::new();
        let x = cx.named_tensor::<R1<4>>("x");
        let y = x * detach(x);
        let z = with_gradient(x, x * 10.0, x * 0.0 + 3.0);
        let loss = sum_all(&mut cx, View { id: (y + z).id, st: (y + z).shape });
        let g = backward(&mut cx, loss.id, &[x.id]).unwrap();
        cx.keep_tensors(vec![g[0].id, loss.id]);
        let xs = vec![1.0, -2.0, 0.5, 4.0];
        data::set(&mut cx, x.id, xs.clone());
        cx.execute();
        let grad = data::get(&cx, g[0].id).unwrap();
        let want: Vec<f32> = xs.iter().map(|v| v + 3.0).collect();
        assert_eq!(grad, &want[..]);
        let value = data::get(&cx, loss.id).unwrap()[0];
        assert_eq!(value, xs.iter().map(|v| v * v + 10.0 * v).sum::<f32>());
    }
}
