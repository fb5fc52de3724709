//! The DINO trainer: data, the one-graph step, schedules, logging, checkpoints, resume and
//! k-NN evaluation after each epoch. [`train_model`] reads like the reference's `train_dino`
//! and [`train_one_epoch`] like its `train_one_epoch`.
pub mod checkpoint;
mod epoch;
pub mod health;
pub mod hyper;
pub mod log;
mod open;
pub mod supervised;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dino_runtime::backend::plan::Policy;
use dino_runtime::backend::Passes;
use dino_runtime::config::DinoConfig;
use dino_runtime::data::{Loader, MultiCrop};
use dino_runtime::dino::{DinoStep, Schedules};
use dino_runtime::dist::Group;
use dino_runtime::model::DinoModel;
use dino_runtime::tensors::NamedTensor;
use dino_runtime::{Error, Result};

use epoch::{end_of_epoch, raw_pixel_baseline, train_one_epoch, KnnMonitor, Loop};
pub use hyper::Hyper;
use log::{EpochRecord, Record};
use open::{broadcast_state, check_resumed_epoch_length, resume, shared_run};

use crate::dataset::{self, DataSpec};
pub use crate::device::Device;
use crate::eval::knn_eval::format_knn;
use crate::eval::{self, Extractor, KnnResult};

/// What a run is: saved as `config.json`'s `run` and in every checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    pub preset: String,
    pub data: DataSpec,
    pub val: Option<PathBuf>,
    pub seed: u64,
    /// Train on this many images only (spread over the dataset).
    pub limit: Option<usize>,
    /// Evaluate k-NN on this many test images only.
    pub test_limit: Option<usize>,
    /// Evaluate weighted k-NN after every epoch.
    pub knn: bool,
    pub hyper: Hyper,
    /// Log a step record every this many iterations (and the first).
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Keep a numbered checkpoint every this many epochs (0: never; the latest is always kept).
    #[serde(default = "default_save_every")]
    pub save_every: usize,
    /// The storage type of each buffer of the step (the precision pass's policy; checkpoints
    /// stay f32 whatever it is).
    #[serde(default)]
    pub precision: Policy,
}

pub const fn default_log_every() -> usize {
    10
}

pub const fn default_save_every() -> usize {
    20
}

/// How to run it.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub run: RunConfig,
    pub out: PathBuf,
    pub resume: bool,
    /// Write a new run into a non-empty directory that holds no run (never over a file of the
    /// names a run writes).
    pub force: bool,
    /// Stop (with a checkpoint) after this many iterations in total: an interruption.
    pub stop_after: Option<usize>,
    /// No progress output (tests).
    pub quiet: bool,
    /// Where the training step runs.
    pub device: Device,
    /// Run this compiled artifact's step (`dino compile`) instead of building and compiling
    /// the graph.
    pub compiled: Option<PathBuf>,
    /// The ranks of a data-parallel run (one by default): each trains on its shard of every
    /// global batch; rank 0 alone writes the run's files and prints.
    pub group: Group,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct TrainReport {
    /// Iterations done in total (including those before a resume).
    pub iterations: usize,
    /// (iteration, loss) of every iteration run by this call.
    pub losses: Vec<(usize, f32)>,
    /// k-NN results after each epoch evaluated by this call: (epochs done, results).
    pub knn: Vec<(usize, Vec<KnnResult>)>,
    /// k-NN of the raw (normalized) pixels, when k-NN was evaluated.
    pub raw_knn: Option<Vec<KnnResult>>,
    /// Images per second of training (k-NN evaluations excluded).
    pub images_per_s: f64,
    /// Seconds this call spent training (k-NN evaluations excluded).
    pub train_s: f64,
    /// Seconds this call spent in k-NN evaluations (random init, epochs, raw pixels).
    pub eval_s: f64,
    pub bad_images: usize,
    pub checkpoint: PathBuf,
    /// Collapses and stalls the monitor raised in this call.
    pub alerts: Vec<health::Alert>,
}

pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join("checkpoint.safetensors")
}

/// Train the preset named in `opts.run.preset`.
pub fn train(opts: &TrainOptions) -> Result<TrainReport> {
    struct Go<'a>(&'a TrainOptions);
    impl crate::models::DinoVisitor for Go<'_> {
        type Output = Result<TrainReport>;
        fn visit<M: DinoModel>(self, _: &'static str) -> Result<TrainReport> {
            train_model::<M>(self.0)
        }
    }
    crate::models::with_dino(&opts.run.preset, Go(opts)).unwrap_or_else(|| {
        Err(Error::Config {
            what: format!("model `{}`", opts.run.preset),
            why: format!("not a DINO preset; choose one of {}", crate::models::dino_names().join(", ")),
        })
    })
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Teacher weights of a step (backbone and head, `teacher.` removed).
pub(crate) fn teacher_weights<M: DinoModel>(step: &DinoStep<M>) -> Result<eval::Weights> {
    step.teacher_params
        .params
        .iter()
        .map(|p| {
            let data = dino_runtime::graph::data::get_or_err(&step.train.cx, p.id, &p.name)?.to_vec();
            Ok((p.name.trim_start_matches("teacher.").to_string(), NamedTensor { shape: p.shape.clone(), data }))
        })
        .collect()
}

/// Train the objective `M` (any `dino!` declaration; `opts.run.preset` only names the run).
pub fn train_model<M: DinoModel>(opts: &TrainOptions) -> Result<TrainReport> {
    let group = &opts.group;
    let (rank, world) = (group.rank(), group.world());
    // every rank but 0 trains silently and writes nothing
    let quiet = opts.quiet || rank != 0;

    // ============ the run: new, or resumed from its checkpoint ... ============
    let out = &opts.out;
    let ckpt_path = checkpoint_path(out);
    let log_path = out.join("log.jsonl");
    let (run, resumed_meta, resumed_file) = shared_run(opts, &ckpt_path)?;

    // ============ preparing data ... ============
    let cfg: DinoConfig = run.hyper.apply(&M::CONFIG)?;
    let channels = cfg.backbone.channels;
    let splits = dataset::open(&run.data, channels, run.val.as_deref(), run.limit, run.test_limit)?;
    let batch = cfg.batch_size;
    if cfg.freeze_last_layer >= cfg.epochs && !quiet {
        eprintln!(
            "note: the last layer of the head stays frozen for the whole run (--freeze-last-layer {} >= --epochs {})",
            cfg.freeze_last_layer, cfg.epochs
        );
    }
    let crops = MultiCrop::new(cfg.global, cfg.local, cfg.augment);
    let loader =
        Arc::new(Loader::new(Arc::clone(&splits.train), crops, channels, batch, run.seed)?.shard(rank, world)?);
    let niter = loader.steps_per_epoch();
    let total = check_size(&cfg, niter, batch)?;

    // ============ building student and teacher networks, loss and optimizer: one graph ... ============
    let t_build = Instant::now();
    let mut step = match &opts.compiled {
        Some(path) => {
            if world > 1 {
                return Err(Error::Config {
                    what: format!("--compiled with {world} ranks"),
                    why: "a compiled artifact holds a 1-rank step (no all-reduce): train without --compiled".into(),
                });
            }
            if !run.precision.is_fp32() {
                return Err(Error::Config {
                    what: format!("--precision {} with --compiled", run.precision),
                    why: "a compiled artifact holds its own plan (fp32): compile one for this precision, or train without --compiled".into(),
                });
            }
            let mut step = crate::compiled::load_train_step::<M>(path, &run.preset, cfg, opts.device)?;
            step.init(run.seed);
            step
        }
        None => {
            let replicas = dino_runtime::dist::Replicas::of_group(&**group);
            let mut step = DinoStep::<M>::build_replicated(cfg, loader.local_batch(), replicas)?;
            step.init(run.seed);
            step.compile(Passes::default());
            let dev = crate::device::DeviceOptions { policy: run.precision.clone(), ..Default::default() };
            let mut executor = opts.device.executor_with(&step.train.cx, dev)?;
            executor.set_collective(group.0.clone())?;
            step.train.attach(executor);
            step
        }
    };

    // ============ init schedulers ... ============
    let schedules = Schedules::new(&cfg, niter, batch);

    // ============ optionally resume training ... ============
    if rank == 0 {
        std::fs::create_dir_all(out).map_err(io(out))?;
    }
    let start = match (&resumed_file, &resumed_meta) {
        (Some(file), Some(meta)) => resume(&mut step, file, meta, &ckpt_path, &log_path, niter)?,
        (None, Some(meta)) => meta.iteration, // a rank > 0: the state comes from rank 0 below
        _ => {
            if rank == 0 {
                let _ = std::fs::remove_file(&log_path);
            }
            0
        }
    };
    if let Some(meta) = &resumed_meta {
        check_resumed_epoch_length(meta, niter, &ckpt_path)?;
    }
    // ============ every rank starts from rank 0's state (DDP's broadcast) ... ============
    if world > 1 {
        broadcast_state(&mut step, group, &run, start, niter)?;
    }
    if rank == 0 {
        let config_json = serde_json::json!({
            "run": run, "dino": cfg, "iterations_per_epoch": niter, "batch": batch, "ranks": world,
        });
        dino_runtime::files::write_atomic(
            &out.join("config.json"),
            serde_json::to_string_pretty(&config_json).expect("json").as_bytes(),
        )?;
    }
    if !quiet {
        eprintln!(
            "{}: {} images ({} per step{}, {niter} steps per epoch, {} epochs), {} in {:.1} s{}",
            run.preset,
            splits.train.len(),
            batch,
            if world > 1 { format!(" over {world} ranks ({})", group.describe()) } else { String::new() },
            cfg.epochs,
            match &opts.compiled {
                Some(p) => format!("step loaded from {}", p.display()),
                None => "graph built and compiled".to_string(),
            },
            t_build.elapsed().as_secs_f64(),
            if start > 0 { format!(", resuming at iteration {start}") } else { String::new() }
        );
    }

    // ============ k-NN of the random initialization (student = teacher) ... ============
    let mut knn = match (&splits.test, run.knn) {
        (Some(test), true) => Some(KnnMonitor::<M> {
            ex: Extractor::<M>::new(256, opts.device)?,
            train: splits.train.as_ref(),
            test: test.as_ref(),
            quiet,
            group: group.clone(),
        }),
        (None, true) => {
            if !quiet {
                eprintln!("note: no labeled test split (give --val for an image folder): k-NN skipped");
            }
            None
        }
        _ => None,
    };
    let mut lp = Loop {
        opts,
        run: &run,
        loader: &loader,
        schedules: &schedules,
        niter,
        total,
        ckpt_path: &ckpt_path,
        log_path: log_path.clone(),
        writer: if rank == 0 { log::Writer::append(&log_path)? } else { log::Writer::none() },
        report: TrainReport { checkpoint: ckpt_path.clone(), ..Default::default() },
        t0: Instant::now(),
        eval_s: 0.0,
        images_done: 0,
        resumed_at: resumed_meta.as_ref().map(|_| start),
        last_saved: resumed_meta.as_ref().map(|_| start),
        health: if rank == 0 {
            replayed_monitor(&log_path, run.log_every)?
        } else {
            health::Monitor::new(health::Thresholds::for_log_every(run.log_every))
        },
        quiet,
    };
    if let (Some(k), 0) = (&mut knn, start) {
        // the baseline DINO must beat
        let t_eval = Instant::now();
        let r = k.eval(&step)?;
        lp.eval_s += t_eval.elapsed().as_secs_f64();
        if !quiet {
            eprintln!("random init: {}", format_knn(&r));
        }
        lp.writer.write(&Record::Epoch(EpochRecord {
            epoch: 0,
            iteration: 0,
            loss_mean: None,
            images_per_s: 0.0,
            bad_images: 0,
            knn: Some(r.clone()),
            elapsed_s: 0.0,
            train_s: 0.0,
        }))?;
        lp.report.knn.push((0, r));
    }

    // ============ training ... ============
    let mut it = start;
    for epoch in start / niter..cfg.epochs {
        let t_epoch = Instant::now();
        let first = it;
        let e = train_one_epoch(&mut lp, &mut step, epoch, &mut it)?;
        if e.stopped || it < (epoch + 1) * niter {
            break;
        }

        // ============ writing logs, checkpoint and k-NN ... ============
        end_of_epoch(&mut lp, &mut step, knn.as_mut(), epoch, it, &e, first, t_epoch)?;
    }

    // ============ the raw-pixel baseline, once the run is complete (rank 0) ... ============
    if let (Some(k), true, 0) = (&knn, it == total, rank) {
        raw_pixel_baseline(&mut lp, k, &cfg, it)?;
    }
    let (train_s, eval_s) = (lp.train_s(), lp.eval_s);
    let mut report = lp.report;
    report.iterations = it;
    report.train_s = train_s;
    report.eval_s = eval_s;
    report.images_per_s = lp.images_done as f64 / report.train_s.max(1e-9);
    report.bad_images = loader.bad_count();
    Ok(report)
}

/// The collapse monitor, having seen the step records already in the log (a resumed run
/// raises nothing twice and the rest at the iterations the uninterrupted run would).
fn replayed_monitor(log_path: &Path, log_every: usize) -> Result<health::Monitor> {
    let mut m = health::Monitor::new(health::Thresholds::for_log_every(log_every));
    for r in log::read(log_path)? {
        if let Record::Step(s) = r {
            m.observe(&s);
        }
    }
    Ok(m)
}

/// The iterations of the run, once the schedules and the step are known to fit in memory
/// (refused naming the flags otherwise: an allocation that fails aborts the process).
fn check_size(cfg: &DinoConfig, niter: usize, batch: usize) -> Result<usize> {
    let epochs = format!("--epochs {}", cfg.epochs);
    let total = niter.checked_mul(cfg.epochs).ok_or_else(|| Error::Config {
        what: epochs.clone(),
        why: format!("{} epochs of {niter} iterations do not fit in a 64-bit count", cfg.epochs),
    })?;
    crate::resources::check(&epochs, DinoConfig::schedule_bytes(total as u128))?;
    let locals = cfg.local.map_or(0, |l| l.count);
    crate::resources::check(
        &format!("--batch-size {batch} with --local-crops-number {locals} (a step of 2 global and {locals} local crops of {batch} images)"),
        cfg.step_bytes(batch),
    )?;
    Ok(total)
}
