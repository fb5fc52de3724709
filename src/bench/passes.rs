//! The pass ablation (`dino bench passes`): one DINO training step of a zoo preset compiled by
//! several pipelines (every pass, none, each pass switched off in turn, stock luminal, or
//! a user's own), timed in alternating rounds in one process, each checked against the
//! unoptimized graph.
//!
//! ```text
//!   build step (seed 0) ─┬─ Passes::standard()          ─► executor ─┐
//!   (one per row)        ├─ Passes::none()  (reference)  ─► executor ─┤ rounds: every row
//!                        ├─ standard().without("gemm")   ─► executor ─┤ runs `runs` steps,
//!                        ├─ ... a user's pipeline        ─► executor ─┤ alternating; medians
//!                        └─ GenericCompiler+CPUCompiler  ─► luminal  ─┘
//!   first step of each row: loss, new student, teacher, center vs the reference's
//! ```
//!
//! Every row starts from the same initialization and feeds the same crops, masks and
//! hyperparameters, so after one step all of them must hold the same weights up to float
//! reassociation; the table reports the largest difference, relative to `1 + max |ref|`.
use std::time::Instant;

use dino_models::{with_dino, DinoVisitor};
use dino_runtime::backend::executor::{Executor, ProfileEntry, RunStats};
use dino_runtime::backend::plan::Policy;
use dino_runtime::backend::{Builtin, Passes};
use dino_runtime::dino::{DinoStep, StepHyper};
use dino_runtime::graph::data;
use dino_runtime::model::DinoModel;
use dino_runtime::testing::Rng;
use dino_runtime::{Error, Result};
use luminal::prelude::*;
use rand::SeedableRng as _;

use super::measure::rss_mb;
pub use super::passes_table::{Ablation, RowResult};
use super::workloads::matmul_flops;
use crate::device::{Device, DeviceOptions};

/// The default of [`AblationOptions::slow_step_s`].
pub const SLOW_STEP_S: f64 = 5.0;

/// How a row compiles and runs the step.
pub enum Pipeline {
    /// dino's pipeline (any passes) on the chosen device.
    Ours(Passes),
    /// luminal's `GenericCompiler + CPUCompiler`, run by `Graph::execute` (CPU, one thread).
    Stock,
}

/// One row of the table.
pub struct Row {
    pub name: String,
    pub pipeline: Pipeline,
    /// The storage type of each buffer (the precision pass's policy; fp32 unless set). On the
    /// CPU a bf16 row is emulated: its error is bf16's, its time the emulation's.
    pub policy: Policy,
}

impl Row {
    pub fn ours(name: impl Into<String>, passes: Passes) -> Row {
        Row { name: name.into(), pipeline: Pipeline::Ours(passes), policy: Policy::default() }
    }

    /// Every pass, with the precision pass's `policy`.
    pub fn with_policy(policy: Policy) -> Row {
        Row { name: format!("all passes, {policy}"), pipeline: Pipeline::Ours(Passes::standard()), policy }
    }

    pub fn stock() -> Row {
        Row { name: "stock luminal".into(), pipeline: Pipeline::Stock, policy: Policy::default() }
    }
}

/// The standard rows: every pass, none (the reference), each built-in pass off in turn, and
/// stock luminal unless `stock` is false.
pub fn standard_rows(stock: bool) -> Vec<Row> {
    let mut rows = vec![Row::ours("all passes", Passes::standard()), Row::ours("no passes", Passes::none())];
    for b in Builtin::ALL {
        let p = Passes::standard().without(b.name()).expect("a built-in pass is in the standard pipeline");
        rows.push(Row::ours(format!("without {b}"), p));
    }
    if stock {
        rows.push(Row::stock());
    }
    rows
}

/// What the ablation measures.
#[derive(Debug, Clone, Copy)]
pub struct AblationOptions {
    pub batch: usize,
    /// Timed steps per row per round.
    pub runs: usize,
    /// Untimed steps per row before the first round (the first step is the checked one).
    pub warmup: usize,
    pub rounds: usize,
    pub device: Device,
    /// The stock luminal row runs one step, after every other row, and is given up after
    /// this many seconds (luminal interprets most of the graph element by element).
    pub stock_timeout_s: u64,
    /// A row whose checked first step takes longer than this is timed by that step alone
    /// (the graph with no passes takes tens of seconds a step; [`SLOW_STEP_S`] by default).
    /// A first step is cold (first touch of the arena): for a big step whose every row is
    /// slow, raise it so that rows are timed warm.
    pub slow_step_s: f64,
}

/// luminal's own interpreter behind the executor interface (the stock row).
struct LuminalInterpreter;

impl Executor for LuminalInterpreter {
    fn describe(&self) -> String {
        "luminal Graph::execute (cpu, 1 thread)".into()
    }
    fn plan(&mut self, _: &Graph) -> Result<()> {
        Ok(())
    }
    fn execute(&mut self, cx: &mut Graph) -> Result<()> {
        cx.execute();
        Ok(())
    }
    fn to_host(&mut self, _: &mut Graph, _: &[NodeIndex]) -> Result<()> {
        Ok(())
    }
    fn all_to_host(&mut self, _: &mut Graph) -> Result<()> {
        Ok(())
    }
    /// luminal's interpreter runs an all-reduce as a copy: one rank only.
    fn set_collective(&mut self, group: std::sync::Arc<dyn dino_runtime::dist::Collective>) -> Result<()> {
        match group.world() {
            1 => Ok(()),
            n => Err(dino_runtime::Error::Backend(format!("luminal's interpreter runs one rank, not {n}"))),
        }
    }
    fn stats(&self) -> RunStats {
        RunStats::default()
    }
    fn start_profile(&mut self) {}
    fn take_profile(&mut self) -> Vec<ProfileEntry> {
        vec![]
    }
}

/// Reset the peak-RSS mark of this process (Linux `clear_refs` 5); false where unsupported.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The fixed inputs every row's every step gets.
struct Feed {
    global: Vec<f32>,
    local: Vec<f32>,
    hyper: StepHyper,
}

/// A row's compiled step, alive for every round.
struct Live<M: DinoModel> {
    step: DinoStep<M>,
    ex: Box<dyn Executor>,
    result: RowResult,
    /// Timed by its checked step alone ([`AblationOptions::slow_step_s`]).
    slow: bool,
}

/// One step with the fixed inputs: (seconds of the run, loss).
fn run_step<M: DinoModel>(live: &mut Live<M>, feed: &Feed) -> Result<(f64, f32)> {
    let s = &mut live.step;
    s.set_batch(feed.global.clone(), feed.local.clone())?;
    s.set_hyper(&feed.hyper);
    // the same stochastic-depth masks in every row and step
    s.set_drop_masks(&mut rand::rngs::StdRng::seed_from_u64(11));
    let t = Instant::now();
    s.run_on(live.ex.as_mut())?;
    let dt = t.elapsed().as_secs_f64();
    let out = s.outputs()?;
    if !out.loss.is_finite() {
        return Err(Error::Backend(format!("the step's loss is {}", out.loss)));
    }
    s.advance();
    Ok((dt, out.loss))
}

/// The step's results after one step: loss, student, teacher, center, by name.
fn results<M: DinoModel>(live: &mut Live<M>, loss: f32) -> Result<Vec<(String, Vec<f32>)>> {
    let s = &mut live.step;
    live.ex.all_to_host(&mut s.train.cx)?;
    let cx = &s.train.cx;
    let mut out = vec![("loss".to_string(), vec![loss])];
    for p in &s.student_params.params {
        out.push((format!("student.{}", p.name), data::get_or_err(cx, p.id, &p.name)?.to_vec()));
    }
    for (p, id) in s.teacher_params.params.iter().zip(&s.teacher_trained) {
        out.push((format!("teacher.{}", p.name), data::get_or_err(cx, *id, &p.name)?.to_vec()));
    }
    out.push(("center".into(), data::get_or_err(cx, s.center, "center")?.to_vec()));
    Ok(out)
}

/// Largest relative difference of `got` from `reference`, and where.
fn compare(reference: &[(String, Vec<f32>)], got: &[(String, Vec<f32>)]) -> (f64, String) {
    let mut worst = (0f64, String::new());
    if reference.len() != got.len() {
        return (f64::INFINITY, format!("{} results, the reference has {}", got.len(), reference.len()));
    }
    for ((name, a), (_, b)) in reference.iter().zip(got) {
        if a.len() != b.len() {
            return (f64::INFINITY, format!("{name}: {} elements, the reference has {}", b.len(), a.len()));
        }
        let scale = 1.0 + a.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
        let d = a.iter().zip(b).fold(0f64, |m, (x, y)| {
            let d = (x - y).abs() as f64;
            if d.is_nan() {
                f64::INFINITY
            } else {
                m.max(d)
            }
        }) / scale;
        if d > worst.0 || worst.1.is_empty() {
            worst = (d, name.clone());
        }
    }
    worst
}

/// Build, compile and run the checked first step: (the live row, FLOPs per step, loss, seconds of that step).
fn prepare<M: DinoModel>(
    row: Row,
    device: Device,
    opts: &AblationOptions,
    feed: &Feed,
) -> Result<(Live<M>, f64, f32, f64)> {
    let mut step = DinoStep::<M>::build(opts.batch)?;
    step.init(0);
    let flops = matmul_flops(&step.train.cx);
    let t = Instant::now();
    let (passes, compile_s, ex): (Vec<String>, Vec<(String, f64)>, Box<dyn Executor>) = match row.pipeline {
        Pipeline::Ours(p) => {
            step.compile(&p);
            let reports = p.reports();
            let ex =
                device.executor_with(&step.train.cx, DeviceOptions { policy: row.policy, ..Default::default() })?;
            (
                p.names().iter().map(|n| n.to_string()).collect(),
                reports.into_iter().map(|r| (r.name, r.seconds)).collect(),
                ex,
            )
        }
        Pipeline::Stock => {
            step.compile((GenericCompiler::default(), CPUCompiler::default()));
            let s = t.elapsed().as_secs_f64();
            (
                vec!["stock luminal".into()],
                vec![("GenericCompiler+CPUCompiler".into(), s)],
                Box::new(LuminalInterpreter),
            )
        }
    };
    let compile_total_s = compile_s.iter().fold(0.0, |a, c| a + c.1);
    let nodes = step.train.cx.graph.node_count();
    let result = RowResult { compile_s, compile_total_s, nodes, ..RowResult::new(row.name, passes) };
    let mut live = Live { step, ex, result, slow: false };
    // the checked first step, with its memory peak
    let (rss0, _) = rss_mb();
    let reset = reset_peak_rss();
    let (first_s, loss) = run_step(&mut live, feed)?;
    if reset {
        live.result.step_peak_mb = Some((rss_mb().1 - rss0).max(0.0));
    }
    if first_s > opts.slow_step_s {
        // not worth repeating: this step is the row's timing
        live.result.runs.push(first_s);
        live.slow = true;
    }
    let st = live.ex.stats();
    if st.kernels > 0 {
        live.result.kernels = Some(st.kernels);
        live.result.arena_mb = Some(st.arena_bytes as f64 / 1e6);
    }
    Ok((live, flops, loss, first_s))
}

/// The stock luminal row: built, compiled and run once in a thread of its own (a graph is not
/// `Send`, so it is built there), given up after the timeout; its step time is that one
/// step's. Run after every other row, so a step still running cannot disturb their timings.
fn stock_row<M: DinoModel>(
    name: String,
    opts: &AblationOptions,
    feed: &Feed,
    reference: Option<&Vec<(String, Vec<f32>)>>,
) -> RowResult {
    let (tx, rx) = std::sync::mpsc::channel();
    let (opts2, feed2) = (*opts, Feed { global: feed.global.clone(), local: feed.local.clone(), hyper: feed.hyper });
    let row_name = name.clone();
    // graph building recurses deeply: the stack the `dino` binary gives its main thread
    let spawned = std::thread::Builder::new().stack_size(256 << 20).spawn(move || {
        let r = prepare::<M>(Row { name: row_name, ..Row::stock() }, Device::Cpu, &opts2, &feed2).and_then(
            |(mut live, f, loss, dt)| {
                let r = results(&mut live, loss)?;
                Ok((live.result, f, r, dt))
            },
        );
        tx.send(r.map_err(|e| e.to_string())).ok();
    });
    let passes = vec!["stock luminal".to_string()];
    if let Err(e) = spawned {
        return RowResult::failed(name, passes, format!("cannot start a thread: {e}"));
    }
    match rx.recv_timeout(std::time::Duration::from_secs(opts.stock_timeout_s)) {
        Ok(Ok((mut result, flops, r, dt))) => {
            if let Some(reference) = reference {
                let (e, t) = compare(reference, &r);
                result.max_error = Some(e);
                result.worst_tensor = Some(t);
            }
            result.runs = vec![dt];
            result.step_s = Some(dt);
            result.gflops = Some(flops / dt / 1e9);
            result
        }
        Ok(Err(e)) => RowResult::failed(name, passes, e),
        Err(_) => RowResult::failed(name, passes, format!("did not finish one step within {} s", opts.stock_timeout_s)),
    }
}

struct Go<'a> {
    rows: Vec<Row>,
    /// The row every other is compared with.
    reference: usize,
    opts: AblationOptions,
    progress: &'a mut dyn FnMut(&str),
}

impl DinoVisitor for Go<'_> {
    type Output = Result<Ablation>;

    fn visit<M: DinoModel>(self, name: &'static str) -> Result<Ablation> {
        let Go { rows, reference: reference_row, opts, progress } = self;
        let cfg = M::CONFIG;
        let (c, g) = (cfg.backbone.channels, cfg.global.size);
        let mut rng = Rng::new(7);
        let global = rng.uniform(2 * opts.batch * c * g * g, 1.0);
        let local = cfg.local.map(|l| rng.uniform(l.count * opts.batch * c * l.size * l.size, 1.0)).unwrap_or_default();
        let feed = Feed {
            global,
            local,
            hyper: StepHyper {
                lr: 5e-4,
                weight_decay: 0.04,
                momentum: 0.996,
                teacher_temp: 0.04,
                freeze_last_layer: false,
            },
        };
        let mut lives: Vec<Option<Live<M>>> = vec![];
        let mut failed: Vec<RowResult> = vec![];
        let mut flops = 0.0;
        let mut reference: Option<Vec<(String, Vec<f32>)>> = None;
        let mut checked: Vec<Option<Vec<(String, Vec<f32>)>>> = vec![];
        let reference_name = rows[reference_row].name.clone();
        let (stock, rows): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| matches!(r.pipeline, Pipeline::Stock));
        for row in rows {
            progress(&format!("compiling and checking `{}`", row.name));
            let is_reference = row.name == reference_name;
            let name = row.name.clone();
            let passes = match &row.pipeline {
                Pipeline::Ours(p) => p.names().iter().map(|n| n.to_string()).collect(),
                Pipeline::Stock => vec!["stock luminal".to_string()],
            };
            // the reference runs on the CPU, whose executor runs any graph (a device's may run
            // only fused kernels and GEMMs)
            let device = if is_reference { Device::Cpu } else { opts.device };
            match prepare::<M>(row, device, &opts, &feed).and_then(|(mut live, f, loss, _)| {
                let r = results(&mut live, loss)?;
                Ok((live, f, r))
            }) {
                Ok((live, f, r)) => {
                    flops = f;
                    if is_reference && reference.is_none() {
                        reference = Some(r.clone());
                    }
                    checked.push(Some(r));
                    lives.push(Some(live));
                }
                Err(e) => {
                    checked.push(None);
                    lives.push(None);
                    failed.push(RowResult::failed(name, passes, e.to_string()));
                }
            }
        }
        for (live, r) in lives.iter_mut().zip(&checked) {
            if let (Some(live), Some(r), Some(reference)) = (live.as_mut(), r, reference.as_ref()) {
                let (e, t) = compare(reference, r);
                live.result.max_error = Some(e);
                live.result.worst_tensor = Some(t);
            }
        }
        for live in lives.iter_mut().flatten().filter(|l| !l.slow) {
            for _ in 0..opts.warmup {
                run_step(live, &feed)?;
            }
        }
        for round in 0..opts.rounds.max(1) {
            for live in lives.iter_mut().flatten().filter(|l| !l.slow) {
                progress(&format!("round {}/{}: `{}`", round + 1, opts.rounds.max(1), live.result.name));
                for _ in 0..opts.runs.max(1) {
                    let (dt, _) = run_step(live, &feed)?;
                    live.result.runs.push(dt);
                }
            }
        }
        let mut out = vec![];
        let mut failed = failed.into_iter();
        let stock: Vec<RowResult> = stock
            .into_iter()
            .map(|row| {
                progress(&format!("`{}`: one step (at most {} s)", row.name, opts.stock_timeout_s));
                stock_row::<M>(row.name, &opts, &feed, reference.as_ref())
            })
            .collect();
        for live in lives {
            match live {
                Some(mut l) => {
                    let mut sorted = l.result.runs.clone();
                    sorted.sort_by(f64::total_cmp);
                    let med = sorted[sorted.len() / 2];
                    l.result.step_s = Some(med);
                    l.result.gflops = Some(flops / med / 1e9);
                    out.push(l.result);
                }
                None => out.extend(failed.next()),
            }
        }
        out.extend(stock);
        Ok(Ablation {
            model: name.to_string(),
            batch: opts.batch,
            device: opts.device.to_string(),
            threads: rayon::current_num_threads(),
            flops_per_step: flops,
            reference: reference_name,
            rows: out,
        })
    }
}

/// Run the ablation of `rows` on the DINO preset `model`, every row checked against the row
/// with no passes (there must be one). `progress` hears what is being done.
pub fn ablate(model: &str, rows: Vec<Row>, opts: AblationOptions, progress: &mut dyn FnMut(&str)) -> Result<Ablation> {
    let Some(reference) = rows.iter().position(|r| matches!(&r.pipeline, Pipeline::Ours(p) if p.names().is_empty()))
    else {
        return Err(Error::Config {
            what: "ablation rows".into(),
            why: "one row must have no passes: the reference every row is checked against".into(),
        });
    };
    ablate_against(model, rows, reference, opts, progress)
}

/// [`ablate`] with row `reference` (one of ours) as the reference instead of the graph with
/// no passes, where that one is too slow to run (a ViT-S/16 step here).
pub fn ablate_against(
    model: &str,
    rows: Vec<Row>,
    reference: usize,
    opts: AblationOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Ablation> {
    match rows.get(reference).map(|r| &r.pipeline) {
        Some(Pipeline::Ours(_)) => {}
        _ => {
            return Err(Error::Config {
                what: "ablation reference".into(),
                why: format!("row {reference} is not one of dino's pipelines among {} rows", rows.len()),
            })
        }
    }
    let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::Config { what: "ablation rows".into(), why: "two rows have the same name".into() });
    }
    with_dino(model, Go { rows, reference, opts, progress }).unwrap_or_else(|| {
        Err(Error::UnknownName {
            kind: "DINO preset",
            name: model.to_string(),
            hint: format!(" among the DINO presets ({})", dino_models::dino_names().join(", ")),
        })
    })
}
