//! Start-up of a training step or a backbone's forward pass, JIT against a compiled artifact
//! (`dino bench startup [--graph features|tokens|attention] [--device cuda]`).
//!
//! ```text
//!  JIT:       build graph ─► passes ─► executor ─► first step (plans, NVRTC on a GPU,
//!                                                                allocates, runs)
//!  compiled:  read + check artifact ─► handles on an empty graph ─► executor of the plan
//!             (a GPU: kernels loaded from CUBIN) ─► first step (allocates, runs)
//! ```
//!
//! Rounds alternate JIT and compiled in one process; each figure is the median over rounds.
//! "ready" is the time until the step can run, "first step" the time of the first step (the
//! JIT executor plans in it), both with the same weights, crops and hyperparameters. A
//! forward pass is timed the same way on one batch of images at the native size.
use std::path::Path;
use std::time::Instant;

use dino_runtime::artifact::Target;
use dino_runtime::config::DinoConfig;
use dino_runtime::dino::{DinoStep, StepHyper};
use dino_runtime::model::{DinoModel, VitModel};
use dino_runtime::Result;
use rand::SeedableRng;

use crate::compiled::{self, ForwardGraph};
use crate::device::Device;
use crate::eval::features::random_backbone;
use crate::eval::VitRunner;

/// One way of starting: medians over the rounds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StartupRow {
    pub how: &'static str,
    pub ready_s: f64,
    pub first_step_s: f64,
    /// The first step's loss, or the sum of a forward pass's outputs: equal on both rows (the
    /// same computation).
    pub check: f32,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Run one step on fixed data and return (first-step seconds, loss).
fn first_step<M: DinoModel>(step: &mut DinoStep<M>) -> Result<(f64, f32)> {
    let (ng, nl) = step.crop_sizes();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let crops = |n: usize| (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5).collect::<Vec<f32>>();
    let t = Instant::now();
    step.set_batch(crops(ng), crops(nl))?;
    step.set_drop_masks(&mut rng);
    step.set_hyper(&StepHyper {
        lr: 1e-4,
        weight_decay: 0.04,
        momentum: 0.996,
        teacher_temp: 0.04,
        freeze_last_layer: false,
    });
    step.train.run()?;
    let out = step.outputs()?;
    Ok((t.elapsed().as_secs_f64(), out.loss))
}

/// Compile `M`'s step for `cfg` into `artifact` for `target`, then `rounds` alternating JIT and
/// compiled start-ups on `device` (a GPU: kernels through NVRTC, or loaded from the CUBIN).
pub fn startup<M: DinoModel>(
    preset: &str,
    cfg: DinoConfig,
    artifact: &Path,
    rounds: usize,
    device: Device,
    target: Target,
) -> Result<Vec<StartupRow>> {
    compiled::compile_train_step::<M>(preset, cfg, target, artifact)?;
    let mut times = [(vec![], vec![], 0f32), (vec![], vec![], 0f32)];
    for _ in 0..rounds.max(1) {
        // JIT, as `dino train` does without --compiled
        let t = Instant::now();
        let mut step = DinoStep::<M>::build_with(cfg, cfg.batch_size)?;
        step.init(0);
        step.compile(dino_runtime::backend::Passes::default());
        let ex = device.executor(&step.train.cx)?;
        step.train.attach(ex);
        times[0].0.push(t.elapsed().as_secs_f64());
        let (s, loss) = first_step(&mut step)?;
        times[0].1.push(s);
        times[0].2 = loss;
        drop(step);
        // compiled
        let t = Instant::now();
        let mut step = compiled::load_train_step::<M>(artifact, preset, cfg, device)?;
        step.init(0);
        times[1].0.push(t.elapsed().as_secs_f64());
        let (s, loss) = first_step(&mut step)?;
        times[1].1.push(s);
        times[1].2 = loss;
    }
    Ok(rows(times))
}

type Times = [(Vec<f64>, Vec<f64>, f32); 2];

fn rows([jit, comp]: Times) -> Vec<StartupRow> {
    vec![
        StartupRow { how: "jit", ready_s: median(jit.0), first_step_s: median(jit.1), check: jit.2 },
        StartupRow { how: "compiled", ready_s: median(comp.0), first_step_s: median(comp.1), check: comp.2 },
    ]
}

/// Compile `V`'s forward `graph` for `batch` images at the native size into `artifact` for
/// `target`, then `rounds` alternating JIT and compiled start-ups on `device`, each running
/// one batch.
pub fn startup_forward<V: VitModel>(
    graph: ForwardGraph,
    batch: usize,
    artifact: &Path,
    rounds: usize,
    device: Device,
    target: Target,
) -> Result<Vec<StartupRow>> {
    let size = V::IMAGE;
    compiled::compile_forward::<V>(graph, None, batch, size, target, artifact)?;
    let weights = random_backbone::<V>(0);
    let px = V::CHANNELS * size * size;
    let images: Vec<Vec<f32>> =
        (0..batch).map(|b| (0..px).map(|i| (((b * px + i) * 7919) % 255) as f32 / 127.5 - 1.0).collect()).collect();
    let mut times: Times = [(vec![], vec![], 0.0), (vec![], vec![], 0.0)];
    for _ in 0..rounds.max(1) {
        for (i, t) in times.iter_mut().enumerate() {
            let t0 = Instant::now();
            let mut runner = match i {
                0 => VitRunner::<V>::new(graph.output(), None, device)?,
                _ => compiled::load_forward::<V>(artifact, graph, None, size, device)?,
            };
            runner.set_weights(&weights)?;
            t.0.push(t0.elapsed().as_secs_f64());
            let t1 = Instant::now();
            let out = runner.run(&images, size, size)?;
            t.1.push(t1.elapsed().as_secs_f64());
            // weighted: a normalized [CLS] sums to zero
            t.2 = out.iter().flatten().enumerate().map(|(i, v)| v * (i % 7 + 1) as f32).sum();
        }
    }
    Ok(rows(times))
}
