//! The graphs the engine benchmark runs.
use dino_runtime::autograd::backward;
use dino_runtime::dino::{center_update, dino_loss, ema_update, DinoLossConfig};
use dino_runtime::graph::{ops::sum_all, Handles, View};
use dino_runtime::nn::{Block, DinoHead, ParamSet, Parameters, VisionTransformer};
use dino_runtime::optim::{AdamWConfig, Optimizer, OptimizerKind};
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
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::BlockFwd => "block-fwd",
            Workload::BlockFwdbwd => "block-fwdbwd",
            Workload::DinoStep => "dino-step",
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

type BenchBlock = Block<192, 3, 64, 576, 768>;

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

type SmallVit = VisionTransformer<1, 4, 128, 4, 32, 384, 512, 16, 50>;
type SmallHead = DinoHead<128, 512, 128, 1024>;
const BATCH: usize = 64;
const LOCALS: usize = 6;

fn dino_step() -> Result<Built> {
    let mut cx = Box::new(Graph::new());
    let student = SmallVit::new(&mut cx, 6, true, 1e-6);
    let student_head = SmallHead::new(&mut cx, 3, true);
    let teacher = SmallVit::new(&mut cx, 6, true, 1e-6);
    let teacher_head = SmallHead::new(&mut cx, 3, true);
    let globals = cx.named_tensor::<R4<{ 2 * BATCH }, 1, 28, 28>>("global_crops");
    let locals = cx.named_tensor::<R4<{ LOCALS * BATCH }, 1, 12, 12>>("local_crops");
    let center = cx.named_tensor::<R1<1024>>("center");
    let teacher_temp = cx.named_tensor::<R0>("teacher_temp");
    let momentum = cx.named_tensor::<R0>("momentum");

    // teacher on the 2 global crops only; student on all crops with shared parameters
    let t_out = teacher_head.forward(teacher.forward::<Const<{ 2 * BATCH }>, 28, 28, 49, 50>(globals));
    let s_global = student_head.forward(student.forward::<Const<{ 2 * BATCH }>, 28, 28, 49, 50>(globals));
    let s_local = student_head.forward(student.forward::<Const<{ LOCALS * BATCH }>, 12, 12, 9, 10>(locals));
    let mut stages = vec![("forward".to_string(), cx.graph.node_count())];
    let cfg = DinoLossConfig { student_temp: 0.1, global_views: 2, local_views: LOCALS };
    let loss = dino_loss::<{ 2 * BATCH }, { LOCALS * BATCH }, 1024, 2, LOCALS, { BATCH * 1024 }>(
        &cfg,
        s_global,
        Some(s_local),
        t_out,
        center,
        teacher_temp,
    );
    let new_center = center_update(center, t_out, 0.9);

    let mut s_params = ParamSet::of(&[("backbone", &student as &dyn Parameters), ("head", &student_head)][..], &mut cx);
    let t_params = ParamSet::of(
        &[("teacher.backbone", &teacher as &dyn Parameters), ("teacher.head", &teacher_head)][..],
        &mut cx,
    );
    s_params.init(&mut cx, 0);
    t_params.init(&mut cx, 0); // same seed: the teacher starts equal to the student
                               // weight_g stays 1 (norm_last_layer): not trained
    s_params.params.retain(|p| !p.name.ends_with("last_layer.weight_g"));
    let grads = backward(&mut cx, loss.id, &s_params.ids())?;
    stages.push(("+backward".to_string(), cx.graph.node_count()));
    let opt = Optimizer::build(
        &mut cx,
        OptimizerKind::AdamW(AdamWConfig::default()),
        &s_params,
        &grads,
        Some(3.0),
        &["default", "last_layer"],
        |n| n.contains("last_layer") as usize,
    )?;
    opt.init_state(&mut cx);
    // EMA over the trained parameters (teacher's weight_g is 1 like the student's)
    let teacher_trained: Vec<(NodeIndex, Vec<usize>)> = t_params
        .params
        .iter()
        .filter(|p| !p.name.ends_with("last_layer.weight_g"))
        .map(|p| (p.id, p.shape.clone()))
        .collect();
    let new_teacher = ema_update(&mut cx, &teacher_trained, &opt.new_params, momentum.id);
    stages.push(("+adamw+ema".to_string(), cx.graph.node_count()));

    let mut transfers = Handles(vec![]);
    for ((old, _), new) in teacher_trained.iter().zip(&new_teacher) {
        transfers.0.extend([*new, *old]);
    }
    transfers.0.extend([new_center.id, center.id]);
    for id in transfers.0.iter().step_by(2) {
        cx.no_delete.insert(*id);
    }
    cx.no_delete.insert(loss.id);
    for (id, v) in [(center.id, vec![0.0; 1024]), (teacher_temp.id, vec![0.04]), (momentum.id, vec![0.996])] {
        dino_runtime::graph::data::set(&mut cx, id, v);
        cx.no_delete.insert(id);
    }
    let flops = matmul_flops(&cx);
    Ok(Built {
        cx,
        inputs: vec![(globals.id, 2 * BATCH * 28 * 28), (locals.id, LOCALS * BATCH * 12 * 12)],
        outputs: Handles(vec![loss.id]),
        transfers,
        optimizer: Some(opt),
        stages,
        flops,
    })
}

/// Build a workload's graph (before any compiler pass).
pub fn build(w: Workload) -> Result<Built> {
    match w {
        Workload::BlockFwd => block(false),
        Workload::BlockFwdbwd => block(true),
        Workload::DinoStep => dino_step(),
    }
}
