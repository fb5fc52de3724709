//! The graphs the engine benchmark runs.
use dino_models::{DinoVitS16Paper, FmnistSmall};
use dino_runtime::autograd::backward;
use dino_runtime::dino::DinoStep;
use dino_runtime::graph::{ops::sum_all, Handles, View};
use dino_runtime::model::DinoModel;
use dino_runtime::nn::{Block, ParamSet};
use dino_runtime::optim::Optimizer;
use dino_runtime::step::TrainStep;
use dino_runtime::Result;
use luminal::prelude::*;

/// A workload of the engine benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Workload {
    /// One ViT block, B=64, N=50, D=192, 3 heads, MLP 768: forward.
    BlockFwd,
    /// The same block: forward and backward of `sum(block(x) * r)`.
    BlockFwdbwd,
    /// A DINO training step of the `fmnist-small` shape (ViT dim 128, depth 6, 4 heads,
    /// patch 4 on 28x28x1; 2 global 28px + 6 local 12px crops; head 512/128/1024; batch 64):
    /// teacher on the globals, student on all crops, DINO loss, backward, clipping, AdamW,
    /// teacher and center EMA.
    DinoStep,
    /// The full DINO ViT-S/16 step (2x224 + 10x96 crops, batch 64): graph building, autograd
    /// and every pass, timed; not executed (3.5 TFLOP per step is for the GPU).
    DinoVits16Compile,
    /// ViT-S/16 forward at 224 px, batch 64: the [CLS] features (the GPU baseline's graph).
    VitS16Fwd,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::BlockFwd => "block-fwd",
            Workload::BlockFwdbwd => "block-fwdbwd",
            Workload::DinoStep => "dino-step",
            Workload::DinoVits16Compile => "dino-vits16-compile",
            Workload::VitS16Fwd => "vit-s16-fwd",
        }
    }
}

/// A built workload: its graph and what a step sets and moves.
pub struct Built {
    pub cx: Box<Graph>,
    /// Inputs fed every step (fresh data), with their element counts.
    pub inputs: Vec<(NodeIndex, usize)>,
    /// Kept outputs read (then dropped) every step.
    pub outputs: Handles,
    /// `(new, old)` pairs moved after every step (new teacher -> teacher, ...), beyond the
    /// optimizer's own.
    pub transfers: Handles,
    pub optimizer: Option<Optimizer>,
    /// Node counts after each building stage.
    pub stages: Vec<(String, usize)>,
    /// Multiply-adds of all matrix products, times 2.
    pub flops: f64,
}

/// FLOPs of the matrix products of a primitive graph: `2 * elements` of every `Mul` feeding
/// a `SumReduce` (luminal's form of a contraction).
pub fn matmul_flops(cx: &Graph) -> f64 {
    use luminal::prelude::petgraph::{visit::EdgeRef, Direction};
    let mut total = 0.0;
    for n in cx.graph.node_indices() {
        let op = cx.graph.node_weight(n).expect("node").as_any();
        if !op.is::<luminal::op::Mul>() {
            continue;
        }
        let feeds_sum = cx
            .graph
            .edges_directed(n, Direction::Outgoing)
            .any(|e| cx.graph.node_weight(e.target()).expect("node").as_any().is::<luminal::op::SumReduce>());
        if feeds_sum {
            let st = cx.get_sources(n)[0].2;
            let elems: f64 = dino_runtime::graph::view::logical_dims(&st)
                .iter()
                .map(|d| d.exec(&cx.dyn_map).unwrap_or(0) as f64)
                .product();
            total += 2.0 * elems;
        }
    }
    total
}

type BenchBlock = Block<192, 3, 64, 576, 768, 768>;

fn block(backward_too: bool) -> Result<Built> {
    let mut cx = Box::new(Graph::new());
    let block = BenchBlock::new(&mut cx, true, 1e-6);
    let x = cx.named_tensor::<R3<64, 50, 192>>("x");
    let y = block.forward(x);
    let params = ParamSet::of(&block, &mut cx);
    params.init(&mut cx, 0);
    let mut stages = vec![("forward".to_string(), cx.graph.node_count())];
    let mut inputs = vec![(x.id, 64 * 50 * 192)];
    let mut outputs = Handles(vec![]);
    if backward_too {
        let r = cx.named_tensor::<R3<64, 50, 192>>("r");
        let prod = y * r;
        let loss = sum_all(&mut cx, View { id: prod.id, st: prod.shape });
        let grads = backward(&mut cx, loss.id, &params.ids())?;
        outputs.0.push(loss.id);
        outputs.0.extend(grads.iter().map(|g| g.id));
        inputs.push((r.id, 64 * 50 * 192));
        stages.push(("+backward".to_string(), cx.graph.node_count()));
    } else {
        outputs.0.push(y.id);
    }
    for id in &outputs.0 {
        cx.no_delete.insert(*id);
    }
    let flops = matmul_flops(&cx);
    Ok(Built { cx, inputs, outputs, transfers: Handles::default(), optimizer: None, stages, flops })
}

/// ViT-S/16 forward, batch 64 at 224 px, weights initialized as DINO does.
fn vit_forward() -> Result<Built> {
    use dino_models::VitSmall16;
    let mut cx = Box::new(Graph::new());
    let model = VitSmall16::new(&mut cx);
    let x = cx.named_tensor::<(Const<64>, Const<3>, Const<224>, Const<224>)>("x");
    let cls = model.forward(x);
    let params = ParamSet::of(&model, &mut cx);
    params.init(&mut cx, 0);
    cx.no_delete.insert(cls.id);
    let stages = vec![("forward".to_string(), cx.graph.node_count())];
    let flops = matmul_flops(&cx);
    Ok(Built {
        cx,
        inputs: vec![(x.id, 64 * 3 * 224 * 224)],
        outputs: Handles(vec![cls.id]),
        transfers: Handles::default(),
        optimizer: None,
        stages,
        flops,
    })
}

/// A DINO step of a declared objective, as a workload.
fn dino_step<M: DinoModel>(batch: usize) -> Result<Built> {
    let mut step = DinoStep::<M>::build(batch)?;
    step.init(0);
    for (id, v) in [(step.teacher_temp, 0.04), (step.momentum, 0.996)] {
        dino_runtime::graph::data::set(&mut step.train.cx, id, vec![v]);
    }
    let cfg = M::CONFIG;
    let g = cfg.global.size;
    let mut inputs = vec![(step.global_crops, 2 * batch * cfg.backbone.channels * g * g)];
    if let (Some(id), Some(l)) = (step.local_crops, cfg.local) {
        inputs.push((id, l.count * batch * cfg.backbone.channels * l.size * l.size));
    }
    // the student's stochastic-depth masks are fed every step too
    inputs.extend(step.drop_inputs.iter().map(|d| (d.id, d.rows)));
    let mut transfers = Handles(vec![]);
    for (new, old) in step.new_teacher.iter().zip(&step.teacher_trained) {
        transfers.0.extend([*new, *old]);
    }
    transfers.0.extend([step.new_center, step.center]);
    let flops = matmul_flops(&step.train.cx);
    let DinoStep { train, stages, .. } = step;
    let TrainStep { cx, optimizer, loss, .. } = train;
    Ok(Built { cx, inputs, outputs: Handles(vec![loss]), transfers, optimizer: Some(optimizer), stages, flops })
}

/// Build a workload's graph (before any compiler pass).
pub fn build(w: Workload) -> Result<Built> {
    match w {
        Workload::BlockFwd => block(false),
        Workload::BlockFwdbwd => block(true),
        Workload::DinoStep => dino_step::<FmnistSmall>(64),
        Workload::DinoVits16Compile => dino_step::<DinoVitS16Paper>(64),
        Workload::VitS16Fwd => vit_forward(),
    }
}
