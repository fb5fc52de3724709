//! DINO's projection head.
use luminal::prelude::*;

use super::activation::gelu;
use super::linear::Linear;
use super::param::{Init, ParamVisitor, Parameters};

/// `mlp -> L2 normalize -> weight-normalized linear`: `Linear(D, HID) GELU (Linear(HID, HID)
/// GELU)* Linear(HID, BOT)`, then `x / max(||x||, 1e-12)`, then `x W^T` with
/// `W = g v / ||v||` row-wise and no bias. With `norm_last_layer`, `g` stays 1 (DINO freezes
/// it); it is still a tensor of the state dict, so its gradient is simply not applied.
///
/// # Shapes
/// `x (B, D) -> (B, OUT)`; `mlp.{0,2,..}` linears, `last_layer.weight_v (OUT, BOT)`,
/// `last_layer.weight_g (OUT, 1)`.
///
/// PyTorch equivalent: `vision_transformer.DINOHead(D, OUT, use_bn=False, nlayers,
/// hidden_dim=HID, bottleneck_dim=BOT)`.
pub struct DinoHead<const D: usize, const HID: usize, const BOT: usize, const OUT: usize> {
    pub first: Linear<D, HID>,
    pub hidden: Vec<Linear<HID, HID>>,
    pub last: Linear<HID, BOT>,
    pub weight_v: GraphTensor<R2<OUT, BOT>>,
    pub weight_g: GraphTensor<R2<OUT, 1>>,
    pub norm_last_layer: bool,
}

impl<const D: usize, const HID: usize, const BOT: usize, const OUT: usize> DinoHead<D, HID, BOT, OUT> {
    /// A head with `layers >= 2` linear layers in its MLP.
    pub fn new(cx: &mut Graph, layers: usize, norm_last_layer: bool) -> Self {
        assert!(layers >= 2, "DinoHead needs at least 2 MLP layers");
        DinoHead {
            first: Linear::new(cx, true),
            hidden: (0..layers - 2).map(|_| Linear::new(cx, true)).collect(),
            last: Linear::new(cx, true),
            weight_v: cx.named_tensor("weight_v"),
            weight_g: cx.named_tensor("weight_g"),
            norm_last_layer,
        }
    }

    /// The L2-normalized bottleneck features, `(B, BOT)`.
    pub fn bottleneck<B: Dimension>(&self, x: GraphTensor<(B, Const<D>)>) -> GraphTensor<(B, Const<BOT>)> {
        let mut h = gelu(self.first.forward(x));
        for l in &self.hidden {
            h = gelu(l.forward(h));
        }
        let z = self.last.forward(h);
        let norm = (z * z).sum_reduce::<(B,), Axis<1>>().sqrt().max_f32(1e-12);
        z / norm.expand::<(B, Const<BOT>), Axis<1>>()
    }

    /// The weight-normalized last layer's weight `g v / ||v||`, `(OUT, BOT)`.
    pub fn last_weight(&self) -> GraphTensor<R2<OUT, BOT>> {
        let v = self.weight_v;
        let norm = (v * v).sum_reduce::<R1<OUT>, Axis<1>>().sqrt(); // (OUT,)
        let scale = self.weight_g.reshape::<R1<OUT>>() / norm;
        v * scale.expand::<R2<OUT, BOT>, Axis<1>>()
    }
}

impl<const D: usize, const HID: usize, const BOT: usize, const OUT: usize, B: Dimension>
    Module<GraphTensor<(B, Const<D>)>> for DinoHead<D, HID, BOT, OUT>
{
    type Output = GraphTensor<(B, Const<OUT>)>;

    fn forward(&self, x: GraphTensor<(B, Const<D>)>) -> Self::Output {
        let w = self.last_weight().permute::<R2<BOT, OUT>, Axes2<1, 0>>();
        self.bottleneck(x).matmul(w)
    }
}

impl<const D: usize, const HID: usize, const BOT: usize, const OUT: usize> Parameters for DinoHead<D, HID, BOT, OUT> {
    fn visit(&self, v: &mut ParamVisitor) {
        v.module("mlp.0", &self.first);
        for (i, l) in self.hidden.iter().enumerate() {
            v.module(&format!("mlp.{}", 2 * (i + 1)), l);
        }
        v.module(&format!("mlp.{}", 2 * (self.hidden.len() + 1)), &self.last);
        // the last layer keeps PyTorch's default Linear init (DINO inits only the MLP)
        v.tensor("last_layer.weight_g", self.weight_g, Init::Ones);
        v.tensor("last_layer.weight_v", self.weight_v, Init::Uniform { bound: 1.0 / (BOT as f32).sqrt() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ParamSet;
    use crate::testing::{check_gradients, layer_problem, Rng};

    #[test]
    fn gradients() {
        check_gradients(
            "dino head",
            &|cx| {
                let mut rng = Rng::new(14);
                let h: DinoHead<4, 6, 3, 5> = DinoHead::new(cx, 3, false);
                let x = cx.named_tensor::<R2<3, 4>>("x");
                let y = h.forward(x);
                let p = ParamSet::of(&h, cx);
                layer_problem(cx, &p, vec![(x.id, rng.uniform(12, 1.0))], y, 0.5, &mut rng)
            },
            2e-3,
            2e-2,
        );
    }

    #[test]
    fn keys_follow_the_reference() {
        let mut cx = Graph::new();
        let h: DinoHead<4, 6, 3, 5> = DinoHead::new(&mut cx, 3, true);
        let p = ParamSet::of(&h, &mut cx);
        let keys: Vec<&str> = p.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            keys,
            [
                "mlp.0.weight",
                "mlp.0.bias",
                "mlp.2.weight",
                "mlp.2.bias",
                "mlp.4.weight",
                "mlp.4.bias",
                "last_layer.weight_g",
                "last_layer.weight_v"
            ]
        );
        assert_eq!(p.get("last_layer.weight_g").unwrap().shape, vec![5, 1]);
    }
}
