//! Compiled artifacts of the facade's graphs: `dino compile` writes them; `dino train`,
//! `dino features` and `dino attention` run them (`--compiled`) with no graph built, no pass
//! run and no kernel compiled at start.
//!
//! ```text
//!  dino compile --model M [hyperparameters] --out F
//!     DinoStep::build ─► passes ─► plan ─► Artifact { identity, `train-step`.plan, .meta }
//!  dino train --compiled F [the same hyperparameters]
//!     Artifact::read (checksums) ─► require(identity) ─► Plan::from_bytes (validated)
//!        ─► DinoStep from its handles on an empty graph ─► the device's executor of the plan
//! ```
//!
//! The identity is what the plan depends on: the target, the preset, the graph kind, the batch,
//! the precision, and every field of the objective the graph is built from (sizes, crops,
//! temperatures and momenta built in as constants, optimizer, clipping). Fields fed to the step
//! at every iteration (learning rate, weight decay, teacher temperature and momentum schedules,
//! epochs, freeze) may differ between the artifact and the run. A differing field is refused by
//! name with both values.
//!
//! A backbone's forward program (features, tokens, attention) is planned at one batch and one
//! image size: a smaller last batch runs padded with zero images whose rows are dropped, and
//! another size is refused naming both.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use dino_runtime::artifact::{Artifact, CompiledProgram, Identity, Target};
use dino_runtime::backend::Passes;
use dino_runtime::config::{DinoConfig, VitConfig};
use dino_runtime::dino::DinoStep;
use dino_runtime::graph::{data, dims};
use dino_runtime::model::{DinoModel, VitModel};
use dino_runtime::{Error, Result};
use serde_json::{json, Value};

use crate::device::Device;
use crate::eval::vit_runner::ForwardHandles;
use crate::eval::{Output, VitRunner};

/// The program name of a DINO training step.
pub const TRAIN_STEP: &str = "train-step";

/// The only precision a plan has today (a storage dtype per buffer: fp32).
const PRECISION: &str = "fp32";

/// A backbone's forward graph, as `dino compile --graph` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardGraph {
    /// The final [CLS] token (`dino features`).
    Features,
    /// Every final token (`dino features --patch-tokens`).
    Tokens,
    /// The last block's attention weights (`dino attention`).
    Attention,
}

impl ForwardGraph {
    pub fn name(self) -> &'static str {
        match self {
            ForwardGraph::Features => "features",
            ForwardGraph::Tokens => "tokens",
            ForwardGraph::Attention => "attention",
        }
    }

    pub fn output(self) -> Output {
        match self {
            ForwardGraph::Features => Output::LastCls(1),
            ForwardGraph::Tokens => Output::Tokens,
            ForwardGraph::Attention => Output::Attention,
        }
    }
}

fn backbone_json(b: &VitConfig) -> Value {
    json!([
        b.image,
        b.patch,
        b.channels,
        b.dim,
        b.depth,
        b.heads,
        b.mlp,
        b.qkv_bias,
        b.norm_eps,
        b.drop_path,
        b.layer_scale,
        b.registers,
        b.ffn.name(),
        b.interpolation.name()
    ])
}

/// What a forward program's plan depends on: the backbone, the graph, the LayerNorm epsilon
/// (weights trained with another one), the batch and the image size.
pub fn forward_fields(
    b: &VitConfig,
    graph: ForwardGraph,
    eps: Option<f32>,
    batch: usize,
    size: usize,
) -> BTreeMap<String, Value> {
    [
        ("graph", json!(graph.name())),
        ("backbone", backbone_json(b)),
        ("norm_eps", json!(eps.unwrap_or(b.norm_eps as f32))),
        ("batch", json!(batch)),
        ("image_size", json!(size)),
        ("precision", json!(PRECISION)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Build, compile and plan `V`'s forward `graph` for `batch` images of `size` px and write it
/// to `out`.
pub fn compile_forward<V: VitModel>(
    graph: ForwardGraph,
    eps: Option<f32>,
    batch: usize,
    size: usize,
    target: Target,
    out: &Path,
) -> Result<CompileReport> {
    let p = V::PATCH;
    if size % p != 0 || size < p {
        return Err(Error::Config {
            what: format!("--size {size}"),
            why: format!("the model's patches are {p} px, so the size must be a multiple of {p}"),
        });
    }
    crate::resources::check(
        &format!("--batch-size {batch} at --size {size}"),
        V::CONFIG.activation_bytes(size, batch, false),
    )?;
    let t0 = Instant::now();
    let mut b = VitRunner::<V>::build_compiled(graph.output(), eps, batch, Passes::standard())?;
    let (build_s, compile_s) = (b.build_s, t0.elapsed().as_secs_f64() - b.build_s);
    let n = (size / p) * (size / p);
    for (k, v) in [(dims::BATCH, batch), (dims::PATCHES, n), (dims::TOKENS, n + 1 + V::REGISTERS)] {
        b.cx.set_dyn_dim(k, v);
    }
    // the weights are set at run time: nothing but the plan is captured
    for prm in &b.params.params {
        data::take(&mut b.cx, prm.id);
    }
    let t1 = Instant::now();
    let handles =
        ForwardHandles { params: b.params, patches: b.patches, resample: b.resample, outputs: b.outputs, batch, size };
    let handles = serde_json::to_value(&handles).map_err(|e| Error::Backend(format!("the program's handles: {e}")))?;
    let mut program = CompiledProgram::capture(&b.cx, handles)?;
    let plan_s = t1.elapsed().as_secs_f64();
    let code = add_code(&mut program, &target, &b.cx)?;
    let mut a = Artifact::new(Identity { target, fields: forward_fields(&V::CONFIG, graph, eps, batch, size) });
    a.add_program(graph.name(), &program, &b.cx)?;
    a.write(out)?;
    let bytes = std::fs::metadata(out).map_err(|e| Error::Io { path: out.into(), source: e })?.len();
    Ok(CompileReport {
        build_s,
        compile_s,
        plan_s,
        kernels: program.plan.kernels(),
        arena_bytes: program.plan.arena_bytes,
        bytes,
        code,
    })
}

/// `V`'s forward `graph` at `size` px from the artifact at `path`, on `device`, at the batch it
/// was compiled for: refused with the differing field when it was built for something else.
pub fn load_forward<V: VitModel>(
    path: &Path,
    graph: ForwardGraph,
    eps: Option<f32>,
    size: usize,
    device: Device,
) -> Result<VitRunner<V>> {
    let a = Artifact::read(path)?;
    let bad = |why: String| Error::Format { path: path.into(), why: format!("program `{}`: {why}", graph.name()) };
    // the batch is the file's to choose; everything else must be what is asked
    let batch = match a.identity.fields.get("batch").and_then(Value::as_u64) {
        Some(b) if b > 0 => b as usize,
        _ => return Err(bad("the identity has no positive `batch`".into())),
    };
    a.require(&Identity {
        target: asked_target(device, &a, path)?,
        fields: forward_fields(&V::CONFIG, graph, eps, batch, size),
    })?;
    let program = a.program(graph.name())?;
    crate::resources::check(&format!("the compiled program of {}", path.display()), program.plan.run_bytes())?;
    let h: ForwardHandles = serde_json::from_value(program.handles.clone()).map_err(|e| bad(e.to_string()))?;
    if (h.batch, h.size) != (batch, size) {
        return Err(bad(format!("handles for batch {} at {} px, identity says {batch} at {size}", h.batch, h.size)));
    }
    // a forward pass may read part of a weight or none of it (the attention graph never reads
    // the last block's values, projection and MLP), never more than all of it
    check_inputs(&program, h.params.params.iter().map(|p| (p.name.clone(), p.id, p.numel())), false).map_err(bad)?;
    let cx = program.shell();
    let rt = device.executor_of(program)?;
    Ok(VitRunner::from_program(cx, h, graph.output(), rt))
}

/// What a DINO step's plan depends on (see the module documentation), as identity fields.
pub fn train_fields(preset: &str, cfg: &DinoConfig) -> BTreeMap<String, Value> {
    let mut f = BTreeMap::new();
    let b = &cfg.backbone;
    let mut put = |k: &str, v: Value| {
        f.insert(k.to_string(), v);
    };
    put("model", json!(preset));
    put("graph", json!(TRAIN_STEP));
    put("batch", json!(cfg.batch_size));
    put("precision", json!(PRECISION));
    put("backbone", backbone_json(b));
    put("head", json!(cfg.head));
    put("global_crop_size", json!(cfg.global.size));
    put("local_crops", json!(cfg.local.map(|l| (l.count, l.size))));
    put("student_temp", json!(cfg.student_temp));
    put("center_momentum", json!(cfg.center_momentum));
    put("optimizer", json!(cfg.optimizer.kind));
    put("sgd_momentum", json!(cfg.optimizer.momentum));
    put("clip_grad", json!(cfg.clip_grad));
    put("clip_scope", json!(cfg.clip_scope));
    put("freeze_rule", json!(cfg.freeze_rule));
    // DINOv2's lr multipliers: the parameters sharing one make a set of scalar inputs
    put("layer_decay", json!(cfg.optimizer.layer_decay));
    put("patch_embed_lr", json!(cfg.optimizer.patch_embed_lr));
    // the objective's terms built into the graph
    put("koleo", json!(cfg.koleo));
    put("centering", json!(cfg.centering));
    put("ibot", json!(cfg.ibot));
    f
}

/// The target `device` compiles for (CUDA: the architecture named, e.g. `sm_90`).
pub fn target(device: Device, arch: Option<&str>) -> Result<Target> {
    device.target(arch)
}

/// The target a run on `device` asks an artifact for: the CPU, or for CUDA the file's own
/// architecture (whether this GPU runs it is checked when its code loads, naming both
/// architectures). A CPU plan asked for on a GPU is refused here.
fn asked_target(device: Device, a: &Artifact, path: &Path) -> Result<Target> {
    match (device, &a.identity.target) {
        (Device::Cpu, _) => Ok(Target::Cpu),
        (Device::Cuda, t @ Target::Cuda { .. }) => Ok(t.clone()),
        (Device::Cuda, Target::Cpu) => Err(Error::Config {
            what: format!("--compiled {} with --device cuda", path.display()),
            why: "the file holds a CPU plan: compile one for the GPU with `dino compile --device cuda --arch sm_XY`"
                .into(),
        }),
    }
}

/// What `dino compile` did.
#[derive(Debug, Clone)]
pub struct CompileReport {
    pub build_s: f64,
    pub compile_s: f64,
    pub plan_s: f64,
    pub kernels: usize,
    pub arena_bytes: usize,
    pub bytes: u64,
    /// What the device code is, when the target has one (CUDA: kernels as CUBIN and PTX).
    pub code: Option<String>,
}

/// The target's code for `program` of the compiled graph `cx` (CUDA: NVRTC to CUBIN and PTX),
/// put in the program; the line saying what it is.
fn add_code(program: &mut CompiledProgram, target: &Target, cx: &luminal::prelude::Graph) -> Result<Option<String>> {
    Ok(Device::compile_code(target, &program.plan, cx)?.map(|(bytes, line)| {
        program.code = Some(bytes);
        line
    }))
}

/// Build, compile and plan `M`'s training step for `cfg` and write it to `out`.
pub fn compile_train_step<M: DinoModel>(
    preset: &str,
    cfg: DinoConfig,
    target: Target,
    out: &Path,
) -> Result<CompileReport> {
    let t0 = Instant::now();
    let mut step = DinoStep::<M>::build_with(cfg, cfg.batch_size)?;
    let build_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    step.compile(Passes::standard());
    let compile_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let handles = serde_json::to_value(&step).map_err(|e| Error::Backend(format!("the step's handles: {e}")))?;
    let mut program = CompiledProgram::capture(&step.train.cx, handles)?;
    let plan_s = t2.elapsed().as_secs_f64();
    let code = add_code(&mut program, &target, &step.train.cx)?;
    let mut a = Artifact::new(Identity { target, fields: train_fields(preset, &cfg) });
    a.add_program(TRAIN_STEP, &program, &step.train.cx)?;
    a.write(out)?;
    let bytes = std::fs::metadata(out).map_err(|e| Error::Io { path: out.into(), source: e })?.len();
    Ok(CompileReport {
        build_s,
        compile_s,
        plan_s,
        kernels: program.plan.kernels(),
        arena_bytes: program.plan.arena_bytes,
        bytes,
        code,
    })
}

/// The training step of `M` for `cfg` from the artifact at `path`, on `device`: refused with
/// the differing field when the artifact was built for something else.
pub fn load_train_step<M: DinoModel>(
    path: &Path,
    preset: &str,
    cfg: DinoConfig,
    device: Device,
) -> Result<DinoStep<M>> {
    let a = Artifact::read(path)?;
    a.require(&Identity { target: asked_target(device, &a, path)?, fields: train_fields(preset, &cfg) })?;
    let program = a.program(TRAIN_STEP)?;
    crate::resources::check(&format!("the compiled step of {}", path.display()), program.plan.run_bytes())?;
    let bad = |why: String| Error::Format { path: path.into(), why: format!("program `{TRAIN_STEP}`: {why}") };
    let mut step: DinoStep<M> = serde_json::from_value(program.handles.clone()).map_err(|e| bad(e.to_string()))?;
    if step.batch != cfg.batch_size {
        return Err(bad(format!("handles for batch {}, identity says {}", step.batch, cfg.batch_size)));
    }
    check_handles(&step, &program).map_err(bad)?;
    step.config = cfg;
    step.train.cx = program.shell();
    step.train.attach(device.executor_of(program)?);
    Ok(step)
}

/// Every tensor the host code allocates for the step (parameters, teacher, optimizer state)
/// is an input of the plan with exactly the size its views read: the handles of a file agree
/// with its plan before anything is allocated from them.
fn check_handles<M: DinoModel>(step: &DinoStep<M>, program: &CompiledProgram) -> std::result::Result<(), String> {
    let tensors = step
        .student_params
        .params
        .iter()
        .chain(&step.teacher_params.params)
        .map(|p| (p.name.clone(), p.id, p.numel()))
        .chain(step.train.optimizer.state_names());
    check_inputs(program, tensors, true)?;
    if step.student_params.params.len() != step.teacher_params.params.len() {
        return Err("student and teacher differ in their parameters".into());
    }
    Ok(())
}

/// Each `(name, node, elements)` is an input of the program's plan read over exactly that
/// many elements (`exact`), or is read over at most that many if at all.
fn check_inputs(
    program: &CompiledProgram,
    tensors: impl Iterator<Item = (String, luminal::prelude::NodeIndex, usize)>,
    exact: bool,
) -> std::result::Result<(), String> {
    let extent: BTreeMap<usize, usize> =
        program.plan.inputs().map(|(s, _)| s.node.index()).zip(program.plan.input_extent.iter().copied()).collect();
    for (name, id, numel) in tensors {
        match extent.get(&id.index()) {
            Some(&e) if e == numel || (!exact && e <= numel) => {}
            Some(&e) => return Err(format!("`{name}` has {numel} elements, the plan reads {e}")),
            None if !exact => {}
            None => return Err(format!("`{name}` (node {}) is not an input of the plan", id.index())),
        }
    }
    Ok(())
}
