//! Compiled artifacts of the facade's graphs: `dino compile` writes them, `dino train
//! --compiled` runs them with no graph built, no pass run and no kernel compiled at start.
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
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use dino_runtime::artifact::{Artifact, CompiledProgram, Identity, Target};
use dino_runtime::backend::Passes;
use dino_runtime::config::DinoConfig;
use dino_runtime::dino::DinoStep;
use dino_runtime::model::DinoModel;
use dino_runtime::{Error, Result};
use serde_json::{json, Value};

use crate::device::Device;

/// The program name of a DINO training step.
pub const TRAIN_STEP: &str = "train-step";

/// The only precision a plan has today (a storage dtype per buffer: fp32).
const PRECISION: &str = "fp32";

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
    put(
        "backbone",
        json!([b.image, b.patch, b.channels, b.dim, b.depth, b.heads, b.mlp, b.qkv_bias, b.norm_eps, b.drop_path]),
    );
    put("head", json!(cfg.head));
    put("global_crop_size", json!(cfg.global.size));
    put("local_crops", json!(cfg.local.map(|l| (l.count, l.size))));
    put("student_temp", json!(cfg.student_temp));
    put("center_momentum", json!(cfg.center_momentum));
    put("optimizer", json!(cfg.optimizer.kind));
    put("sgd_momentum", json!(cfg.optimizer.momentum));
    put("clip_grad", json!(cfg.clip_grad));
    f
}

/// The target `device` compiles for (CUDA: the architecture named, e.g. `sm_90`).
pub fn target(device: Device, arch: Option<&str>) -> Result<Target> {
    match (device, arch) {
        (Device::Cpu, None) => Ok(Target::Cpu),
        (Device::Cpu, Some(a)) => Err(Error::Config {
            what: format!("--arch {a}"),
            why: "an architecture is for --device cuda only (a CPU plan runs on any CPU)".into(),
        }),
        (Device::Cuda, _) => Err(Error::Config {
            what: "--device cuda".into(),
            why: "compiled artifacts hold CPU plans only so far: GPU kernels are still compiled by NVRTC at start \
                  (drop --compiled, or compile for --device cpu)"
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
    let program = CompiledProgram::capture(&step.train.cx, handles)?;
    let plan_s = t2.elapsed().as_secs_f64();
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
    a.require(&Identity { target: target(device, None)?, fields: train_fields(preset, &cfg) })?;
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
    let extent: BTreeMap<usize, usize> =
        program.plan.inputs().map(|(s, _)| s.node.index()).zip(program.plan.input_extent.iter().copied()).collect();
    let tensors = step
        .student_params
        .params
        .iter()
        .chain(&step.teacher_params.params)
        .map(|p| (p.name.clone(), p.id, p.numel()))
        .chain(step.train.optimizer.state_names());
    for (name, id, numel) in tensors {
        match extent.get(&id.index()) {
            Some(&e) if e == numel => {}
            Some(&e) => return Err(format!("`{name}` has {numel} elements, the plan reads {e}")),
            None => return Err(format!("`{name}` (node {}) is not an input of the plan", id.index())),
        }
    }
    if step.student_params.params.len() != step.teacher_params.params.len() {
        return Err("student and teacher differ in their parameters".into());
    }
    Ok(())
}
