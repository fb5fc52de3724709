//! A `vit!`-declared ViT equals the same network assembled by hand from dino-runtime layers
//! (patch embedding, [CLS] and position embeddings, blocks, final norm) on the same weights:
//! bit-identical [CLS] outputs, at the native size.
use dino::runtime::graph::data;
use dino::runtime::nn::{Block, LayerNorm, ParamSet, ParamVisitor, Parameters, PatchEmbed};
use dino::runtime::testing::Rng;
use luminal::prelude::*;

dino::vit! {
    /// 8x8 images of 2 channels, 2x2 patches of 4 px, width 12, 2 blocks.
    pub Declared { image: 8, patch: 4, channels: 2, dim: 12, depth: 2, heads: 3, mlp: 24 }
}

/// The same network, by hand.
struct ByHand {
    cls_token: GraphTensor<R3<1, 1, 12>>,
    pos_embed: GraphTensor<R3<1, 5, 12>>,
    patch: PatchEmbed<2, 4, 12, 32>,
    blocks: Vec<Block<12, 3, 4, 36, 24, 24>>,
    norm: LayerNorm<12>,
}

impl Parameters for ByHand {
    fn visit(&self, v: &mut ParamVisitor) {
        v.tensor("cls_token", self.cls_token, dino::runtime::nn::Init::Zeros);
        v.tensor("pos_embed", self.pos_embed, dino::runtime::nn::Init::Zeros);
        v.module("patch_embed.proj", &self.patch);
        for (i, b) in self.blocks.iter().enumerate() {
            v.module(&format!("blocks.{i}"), b);
        }
        v.module("norm", &self.norm);
    }
}

impl ByHand {
    fn forward(&self, x: GraphTensor<R4<3, 2, 8, 8>>) -> GraphTensor<R2<3, 12>> {
        let patches = self.patch.forward::<Const<3>, 8, 8, 4>(x); // (3, 4, 12)
        let pos = self.pos_embed.reshape::<R2<5, 12>>();
        let patch_pos =
            pos.slice((luminal::prelude::symbolic::Expression::from(1).., ..)).contiguous().realize::<R2<4, 12>>();
        let cls_pos = pos.slice((..luminal::prelude::symbolic::Expression::from(1), ..)).realize::<R2<1, 12>>();
        let patches = patches + patch_pos.expand::<R3<3, 4, 12>, Axis<0>>();
        let cls = (self.cls_token.reshape::<R2<1, 12>>() + cls_pos).expand::<R3<3, 1, 12>, Axis<0>>();
        let mut t = cls.concat_along::<R3<3, 5, 12>, Axis<1>, _>(patches);
        for b in &self.blocks {
            t = b.forward(t);
        }
        let t = self.norm.forward(t);
        t.slice((.., ..luminal::prelude::symbolic::Expression::from(1), ..))
            .contiguous()
            .realize::<R3<3, 1, 12>>()
            .reshape::<R2<3, 12>>()
    }
}

#[test]
fn declared_vit_equals_hand_assembled_layers() {
    let mut cx = Box::new(Graph::new());
    let declared = Declared::new(&mut cx);
    let hand = ByHand {
        cls_token: cx.named_tensor("cls"),
        pos_embed: cx.named_tensor("pos"),
        patch: PatchEmbed::new(&mut cx),
        blocks: (0..2).map(|_| Block::new(&mut cx, true, 1e-6)).collect(),
        norm: LayerNorm::new(&mut cx, 1e-6),
    };
    let x = cx.named_tensor::<R4<3, 2, 8, 8>>("x");
    let a = declared.forward(x).retrieve();
    let b = hand.forward(x).retrieve();
    let pd = ParamSet::of(&declared, &mut cx);
    let ph = ParamSet::of(&hand, &mut cx);
    let names_d: Vec<&str> = pd.params.iter().map(|p| p.name.as_str()).collect();
    let names_h: Vec<&str> = ph.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names_d, names_h, "same state_dict keys");
    let mut rng = Rng::new(5);
    for (p, q) in pd.params.iter().zip(&ph.params) {
        assert_eq!(p.shape, q.shape, "{}", p.name);
        let v = rng.uniform(p.numel(), 0.5);
        pd.set(&mut cx, &p.name, v.clone()).unwrap();
        ph.set(&mut cx, &q.name, v).unwrap();
    }
    data::set(&mut cx, x.id, rng.uniform(3 * 2 * 8 * 8, 1.0));
    cx.no_delete.insert(x.id);
    cx.execute();
    let (ya, yb) = (data::get(&cx, a.id).unwrap(), data::get(&cx, b.id).unwrap());
    assert_eq!(ya.len(), 36);
    assert_eq!(ya, yb, "identical outputs");
}

dino::vit! {
    /// 8x8 images, 2x2 patches of 4 px, 2 register tokens.
    pub WithRegisters { image: 8, patch: 4, channels: 2, dim: 12, depth: 1, heads: 3, mlp: 24, registers: 2 }
}

dino::dino! {
    /// DINO on a backbone with registers: the crops' token counts include them.
    pub RegisterDino for WithRegisters {
        head: { hidden: 16, bottleneck: 8, out: 32, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 8 scale 0.4..1.0, local: 2 x 4 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
        teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4, warmup: 0 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 0.0, freeze_last_layer: 1 epochs,
        augment: { normalize: mean [0.5, 0.5] std [0.5, 0.5] },
    }
}

#[test]
fn registers_count_in_the_tokens_and_parameters() {
    assert_eq!(
        (WithRegisters::CONFIG.registers, WithRegisters::CONFIG.positions(), WithRegisters::CONFIG.tokens()),
        (2, 5, 7)
    );
    let mut cx = Graph::new();
    let net = RegisterDino::new(&mut cx);
    // [CLS] features of global (2x2 patches + [CLS] + 2 registers) and local (1 patch) crops
    let _: GraphTensor<R2<3, 12>> = net.backbone_global(cx.tensor::<R4<3, 2, 8, 8>>());
    let _: GraphTensor<R2<3, 12>> = net.backbone_local(cx.tensor::<R4<3, 2, 4, 4>>());
    let p = ParamSet::of(&net, &mut cx);
    assert_eq!(p.get("backbone.register_tokens").unwrap().shape, vec![1, 2, 12]);
    assert_eq!(p.get("backbone.pos_embed").unwrap().shape, vec![1, 5, 12]);
    let backbone: usize = p.params.iter().filter(|i| i.name.starts_with("backbone.")).map(|i| i.numel()).sum();
    assert_eq!(backbone, WithRegisters::CONFIG.num_params());
}
