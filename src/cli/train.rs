//! `dino train`: DINO self-supervised training of a preset on Fashion-MNIST or an image folder,
//! on one process or on the ranks a launcher started (`mpirun -n N dino train ...`).
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use dino_runtime::dist::{self, Launch};

use dino_runtime::backend::plan::Policy;

use crate::dataset::DataSpec;
use crate::train::log::Record;
use crate::train::{self, Hyper, RunConfig, TrainOptions};

/// How `dino train` runs over several processes, for `--help`.
pub const DATA_PARALLEL_HELP: &str = "\
Data-parallel training (DDP), with a binary built with `--features mpi` (scripts/get-mpi.sh
installs Open MPI):
  mpirun -n 4 dino train --model fmnist-small --batch-size 64 ...   (Open MPI, MPICH)
  srun -n 8 --mpi=pmix dino train ...                               (Slurm)
The launcher's environment gives each process its rank, the world size and its local rank
(OMPI_COMM_WORLD_*, PMI_*, SLURM_*); without a launcher the run is one process, as always.
--batch-size is the global batch: each of N ranks takes its slice of batch/N images of every
step (DINO's batch_size_per_gpu x N), so the learning rate, the schedules and the checkpoints
do not depend on N, and a run saved by N ranks resumes on M. Gradients are averaged over the
ranks in buckets and the center follows the global batch, summed in rank order on every rank:
an N-rank run equals the 1-rank run of the same global batch up to float summation order, and
repeats itself bit for bit. Rank 0 alone writes the run's files and prints; each rank takes
cores/ranks-per-machine threads unless --threads says otherwise. A rank that fails ends every
rank; a collective that waits longer than DINO_DIST_TIMEOUT seconds (default 600) for the
others ends the run naming itself.";

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The DINO preset to train (`dino models` lists them) [default: fmnist-small].
    #[arg(long)]
    pub model: Option<String>,
    /// `fmnist` (Fashion-MNIST, installed by scripts/get-fmnist.sh), `fmnist:DIR`, or an image
    /// folder: `DIR/<class>/*.jpg` (classes sorted) or unlabeled images directly in DIR
    /// [default: fmnist].
    #[arg(long)]
    pub data: Option<DataSpec>,
    /// A labeled image folder to evaluate k-NN on (Fashion-MNIST brings its test split).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Output directory: config.json, log.jsonl, loss.png and checkpoints
    /// [default: runs/<model>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the initialization, the image order, the crops and the drop-path masks.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue the run in --out from its checkpoint, exactly where it stopped (with its own
    /// configuration: flags that would change the training are refused).
    #[arg(long, conflicts_with = "config")]
    pub resume: bool,
    /// Start from a run's config.json (flags given here override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write a new run into a non-empty directory that holds no run (files of the names a run
    /// writes are never replaced).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub on: super::common::RunOn,
    /// Run the training step of this compiled artifact (`dino compile`, the same model and
    /// hyperparameters) instead of building and compiling the graph at start.
    #[arg(long)]
    pub compiled: Option<PathBuf>,
    /// Train on this many images only (spread evenly over the dataset): quick runs.
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub limit: Option<usize>,
    /// Evaluate k-NN on this many test images only.
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub test_limit: Option<usize>,
    /// Evaluate weighted k-NN of the teacher at random init and after every epoch, and raw
    /// pixels at the end (needs labels: Fashion-MNIST, or --val).
    #[arg(long)]
    pub knn: bool,
    /// Log every this many iterations [default: 10, or the resumed run's].
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub log_every: Option<usize>,
    /// Keep a numbered checkpoint every this many epochs, 0 for none (checkpoint.safetensors is
    /// always the latest) [default: 20, or the resumed run's].
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Stop after this many iterations in total, with a checkpoint (as an interruption would).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    /// Storage precision of the training step: fp32, or bf16 (contractions and the
    /// activations they produce and read in bf16 with f32 accumulation; weights, optimizer
    /// state, teacher, center, gradients, statistics and the loss in f32; checkpoints f32).
    /// On the CPU bf16 is an emulation (f32 storage, each bf16 store rounded): the numerics of
    /// bf16, not its speed [default: fp32, or the resumed run's].
    #[arg(long)]
    pub precision: Option<dino_runtime::backend::plan::Precision>,
    /// Storage type per op class over --precision's defaults, `class=dtype,...` (classes: state,
    /// reduction, gradient, gemm-output, gemm-operand, normalized, elementwise; types f32, bf16),
    /// e.g. `normalized=f32` keeps softmax and LayerNorm outputs in f32.
    #[arg(long, value_name = "CLASS=DTYPE,...")]
    pub precision_override: Option<String>,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub hyper: Hyper,
}

/// The directory of the run (`runs/<model>` unless --out).
fn out_dir(args: &TrainArgs, preset: &str) -> PathBuf {
    args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(preset))
}

/// The run a command line describes: a --config file (or, with --resume, the run's own
/// configuration from its checkpoint), then the flags over it.
pub fn run_config(args: &TrainArgs) -> Result<RunConfig, String> {
    let base: Option<RunConfig> = match &args.config {
        None if args.resume => {
            let out = out_dir(args, args.model.as_deref().unwrap_or("fmnist-small"));
            let ckpt = train::checkpoint_path(&out);
            let meta = train::checkpoint::read_meta(&ckpt).map_err(|e| e.to_string())?;
            Some(serde_json::from_value(meta.run).map_err(|e| format!("{}: run configuration: {e}", ckpt.display()))?)
        }
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
            let run = v.get("run").cloned().unwrap_or(v);
            Some(
                serde_json::from_value(run)
                    .map_err(|e| format!("{}: not a dino run configuration: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let b = base.as_ref();
    Ok(RunConfig {
        preset: args.model.clone().or(b.map(|r| r.preset.clone())).unwrap_or_else(|| "fmnist-small".into()),
        data: args.data.clone().or(b.map(|r| r.data.clone())).unwrap_or(DataSpec::Fmnist(None)),
        val: args.val.clone().or(b.and_then(|r| r.val.clone())),
        seed: args.seed.or(b.map(|r| r.seed)).unwrap_or(0),
        limit: args.limit.or(b.and_then(|r| r.limit)),
        test_limit: args.test_limit.or(b.and_then(|r| r.test_limit)),
        knn: args.knn || b.is_some_and(|r| r.knn),
        hyper: b.map(|r| r.hyper.clone()).unwrap_or_default().merged(&args.hyper),
        log_every: args.log_every.or(b.map(|r| r.log_every)).unwrap_or(train::default_log_every()),
        save_every: args.save_every.or(b.map(|r| r.save_every)).unwrap_or(train::default_save_every()),
        precision: precision(args, b.map(|r| &r.precision))?,
    })
}

/// The precision policy: --precision (or the base run's) with --precision-override over it.
fn precision(args: &TrainArgs, base: Option<&Policy>) -> Result<Policy, String> {
    let p = match (args.precision, base) {
        (Some(p), _) => Policy::of(p),
        (None, Some(b)) => b.clone(),
        (None, None) => Policy::default(),
    };
    match &args.precision_override {
        Some(text) => p.with_overrides(text).map_err(|e| format!("--precision-override: {e}")),
        None => Ok(p),
    }
}

pub fn run(args: TrainArgs) -> Result<(), String> {
    let launch = Launch::from_env().map_err(|e| e.to_string())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    super::common::set_threads(args.on.threads.or(launch.default_threads(cores)))?;
    args.on.device.check().map_err(|e| e.to_string())?;
    let group = dist::open(&launch).map_err(|e| e.to_string())?;
    let root = group.is_root();
    let run = run_config(&args)?;
    if root && !run.precision.is_fp32() && args.on.device == crate::device::Device::Cpu {
        eprintln!(
            "note: precision {} on the CPU is emulated (every buffer f32, each bf16 store rounded): bf16's numerics at fp32's speed",
            run.precision
        );
    }
    let out = out_dir(&args, &run.preset);
    let opts = TrainOptions {
        run,
        out,
        resume: args.resume,
        force: args.force,
        stop_after: args.stop_after,
        group: group.clone(),
        quiet: false,
        device: args.on.device,
        compiled: args.compiled.clone(),
    };
    let r = match train::train(&opts) {
        Ok(r) => r,
        Err(e) if group.world() > 1 => {
            // the other ranks may be waiting for this one: end them all, saying why
            match e {
                dino_runtime::Error::Collective { .. } => eprintln!("error: {e}"),
                e => eprintln!("error: rank {} of {}: {e}", group.rank(), group.world()),
            }
            let _ = std::io::stderr().flush();
            group.abort(1)
        }
        Err(e) => return Err(e.to_string()),
    };
    if !root {
        return Ok(()); // rank 0 reports
    }
    if args.json {
        let knn: Vec<_> = r.knn.iter().map(|(e, k)| serde_json::json!({"epoch": e, "knn": k})).collect();
        let j = serde_json::json!({
            "iterations": r.iterations,
            "images_per_s": r.images_per_s,
            "train_s": r.train_s,
            "eval_s": r.eval_s,
            "bad_images": r.bad_images,
            "knn": knn,
            "raw_pixels": r.raw_knn,
            "checkpoint": r.checkpoint,
            "last_loss": r.losses.last().map(|l| l.1),
            "alerts": r.alerts,
        });
        println!("{j}");
        return Ok(());
    }
    if r.losses.is_empty() {
        println!("nothing left to train: the run in {} is complete ({} iterations)", opts.out.display(), r.iterations);
    } else {
        println!(
            "trained {} iterations ({} in this session, {:.1} min at {:.1} images/s, k-NN not counted); \
             checkpoint {}; log, loss.png and config.json in {}",
            r.iterations,
            r.losses.len(),
            r.train_s / 60.0,
            r.images_per_s,
            r.checkpoint.display(),
            opts.out.display()
        );
    }
    if r.bad_images > 0 {
        println!("{} unreadable image(s) were skipped (listed above)", r.bad_images);
    }
    // the k-NN table of the whole run (earlier sessions of a resumed run included)
    let records = crate::train::log::read(&opts.out.join("log.jsonl")).map_err(|e| e.to_string())?;
    let alerts: Vec<String> = records
        .iter()
        .filter_map(|rec| match rec {
            Record::Health(a) => Some(format!("{} at iteration {}", a.symptom.name(), a.iteration)),
            _ => None,
        })
        .collect();
    if alerts.is_empty() {
        println!("health: no collapse or stall seen (`dino plot {}` draws the diagnostics)", opts.out.display());
    } else {
        println!("health: {} (the warnings above say what to change)", alerts.join("; "));
    }
    let mut rows = vec![];
    for rec in &records {
        match rec {
            Record::Epoch(e) if e.knn.is_some() => {
                let what = if e.epoch == 0 { "random init".to_string() } else { format!("epoch {}", e.epoch) };
                rows.push((what, e.knn.clone().unwrap_or_default()));
            }
            Record::Baseline(b) => rows.push((b.name.clone(), b.knn.clone())),
            _ => {}
        }
    }
    if !rows.is_empty() {
        println!("weighted k-NN of the teacher's [CLS] features (T = 0.07), top-1 %:");
        println!("  {:<12} {:>7} {:>7} {:>7} {:>7}", "", "k=10", "k=20", "k=100", "k=200");
        for (what, k) in rows {
            let at = |kk: usize| k.iter().find(|x| x.k == kk).map(|x| format!("{:.2}", x.top1)).unwrap_or_default();
            println!("  {what:<12} {:>7} {:>7} {:>7} {:>7}", at(10), at(20), at(100), at(200));
        }
    }
    Ok(())
}
