//! The DINO trainer: data, the one-graph step, schedules, logging, checkpoints, resume and
//! k-NN evaluation after each epoch.
pub mod checkpoint;
pub mod hyper;
pub mod log;
pub mod supervised;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dino_runtime::backend::cpu::{CpuCompiler, CpuRuntime};
use dino_runtime::config::DinoConfig;
use dino_runtime::data::loader::derive_seed;
use dino_runtime::data::{Dataset, Loader, MultiCrop};
use dino_runtime::dino::{DinoStep, Schedules};
use dino_runtime::model::DinoModel;
use dino_runtime::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use hyper::Hyper;
use log::{EpochRecord, Record, StepRecord};

use crate::dataset::{self, DataSpec};
use crate::eval::{self, Extractor, KnnResult};
use crate::progress::Progress;

/// The stream of stochastic-depth masks (the loader uses streams 1 and 2).
const STREAM_DROP: u64 = 3;

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
}

/// How to run it.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub run: RunConfig,
    pub out: PathBuf,
    pub resume: bool,
    /// Log a step record every this many iterations (and the first).
    pub log_every: usize,
    /// Keep a numbered checkpoint every this many epochs (the latest is always kept).
    pub save_every: usize,
    /// Stop (with a checkpoint) after this many iterations in total: an interruption.
    pub stop_after: Option<usize>,
    /// No progress output (tests).
    pub quiet: bool,
    /// Where the training step runs.
    pub device: Device,
}

/// Where the training step runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// This machine's cores.
    #[default]
    Cpu,
    /// The first NVIDIA GPU (a binary built with `--features cuda`): weights, optimizer state,
    /// teacher and center stay on the GPU; crops go up, the logged values come back.
    Cuda,
}

/// The runtime executing the step graph on the chosen device.
enum StepRuntime {
    Cpu(CpuRuntime),
    #[cfg(feature = "cuda")]
    Cuda(dino_runtime::backend::cuda::runtime::CudaRuntime),
}

impl StepRuntime {
    fn new(device: Device, cx: &luminal::prelude::Graph) -> Result<StepRuntime> {
        match device {
            Device::Cpu => Ok(StepRuntime::Cpu(CpuRuntime::new(cx))),
            #[cfg(feature = "cuda")]
            Device::Cuda => {
                let gpu = dino_runtime::backend::cuda::device::Gpu::open(0)?;
                Ok(StepRuntime::Cuda(dino_runtime::backend::cuda::runtime::CudaRuntime::new(gpu, cx)))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => Err(Error::Config {
                what: "--device cuda".into(),
                why: "this binary was built without the CUDA backend: build it with `cargo build --release \
                      --features cuda`"
                    .into(),
            }),
        }
    }

    /// One step; what it reports (loss, entropies, grad norm) is on the host afterwards.
    fn execute<M: DinoModel>(&mut self, step: &mut DinoStep<M>) -> Result<()> {
        match self {
            StepRuntime::Cpu(rt) => rt.execute(&mut step.cx),
            #[cfg(feature = "cuda")]
            StepRuntime::Cuda(rt) => rt.run_step(step),
        }
    }

    /// Everything the step keeps (weights, optimizer state, teacher, center) on the host, for
    /// a checkpoint or an evaluation; the next step uploads it again.
    fn sync<M: DinoModel>(&mut self, step: &mut DinoStep<M>) -> Result<()> {
        match self {
            StepRuntime::Cpu(_) => Ok(()),
            #[cfg(feature = "cuda")]
            StepRuntime::Cuda(rt) => rt.all_to_host(&mut step.cx),
        }
    }
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
    pub images_per_s: f64,
    pub bad_images: usize,
    pub checkpoint: PathBuf,
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

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Teacher weights of a step (backbone and head, `teacher.` removed).
fn teacher_weights<M: DinoModel>(step: &DinoStep<M>) -> Result<eval::Weights> {
    step.teacher_params
        .params
        .iter()
        .map(|p| {
            let v = dino_runtime::graph::data::get_or_err(&step.cx, p.id, &p.name)?.to_vec();
            Ok((p.name.trim_start_matches("teacher.").to_string(), v))
        })
        .collect()
}

/// Weighted k-NN of the teacher's features: train split against the test split.
pub fn knn_eval<M: DinoModel>(
    ex: &mut Extractor<M>,
    weights: &eval::Weights,
    train: &dyn Dataset,
    test: &dyn Dataset,
    quiet: bool,
) -> Result<Vec<KnnResult>> {
    ex.set_weights(weights)?;
    let mut feats = vec![];
    for (name, ds) in [("train feats", train), ("test feats", test)] {
        let mut p = Progress::new(name, ds.len() as u64, quiet);
        let mut f = ex.features(ds, |done, _| p.set(done as u64, String::new))?;
        p.finish();
        for b in &f.skipped {
            p.println(&format!("warning: skipped unreadable image {}: {}", b.source, b.why));
        }
        eval::knn::l2_normalize(&mut f.data, f.dim);
        feats.push(f);
    }
    knn_of(&feats[0], &feats[1], train.classes().len())
}

/// k-NN between two feature sets (both must be labeled).
pub fn knn_of(train: &eval::Features, test: &eval::Features, classes: usize) -> Result<Vec<KnnResult>> {
    let unlabeled = || Error::Config { what: "k-NN".into(), why: "needs labeled train and test images".into() };
    let (ytr, yte) = (train.all_labels().ok_or_else(unlabeled)?, test.all_labels().ok_or_else(unlabeled)?);
    Ok(eval::weighted_knn(
        &train.data,
        &ytr,
        &test.data,
        &yte,
        train.dim,
        classes,
        &eval::knn::KS,
        eval::knn::TEMPERATURE,
    ))
}

/// Train the objective `M` (any `dino!` declaration; `opts.run.preset` only names the run).
pub fn train_model<M: DinoModel>(opts: &TrainOptions) -> Result<TrainReport> {
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let ckpt_path = checkpoint_path(out);
    let log_path = out.join("log.jsonl");

    // the run: from the checkpoint when resuming (the same run continues), else as given
    let mut run = opts.run.clone();
    let resumed = if opts.resume {
        let (file, meta) = checkpoint::load(&ckpt_path)?;
        let saved: RunConfig = serde_json::from_value(meta.run.clone())
            .map_err(|e| Error::Format { path: ckpt_path.clone(), why: format!("run configuration: {e}") })?;
        if saved.preset != run.preset {
            return Err(Error::Config {
                what: "--resume".into(),
                why: format!("{} holds a `{}` run, not `{}`", ckpt_path.display(), saved.preset, run.preset),
            });
        }
        if run.hyper != Hyper::default() && run.hyper != saved.hyper {
            return Err(Error::Config {
                what: "--resume".into(),
                why: "a resumed run keeps its configuration; drop the hyperparameter flags (or start a new --out)"
                    .into(),
            });
        }
        run = saved;
        Some((file, meta))
    } else {
        if ckpt_path.exists() {
            return Err(Error::Config {
                what: format!("--out {}", out.display()),
                why: "already holds a checkpoint: pass --resume to continue that run, or choose another directory"
                    .into(),
            });
        }
        None
    };

    let cfg: DinoConfig = run.hyper.apply(&M::CONFIG)?;
    let channels = cfg.backbone.channels;
    let splits = dataset::open(&run.data, channels, run.val.as_deref(), run.limit, run.test_limit)?;
    let batch = cfg.batch_size;
    let crops = MultiCrop::new(cfg.global, cfg.local, cfg.augment);
    let loader = Arc::new(Loader::new(Arc::clone(&splits.train), crops, channels, batch, run.seed)?);
    let niter = loader.steps_per_epoch();
    let schedules = Schedules::new(&cfg, niter, batch);
    let total = niter * cfg.epochs;

    let t_build = Instant::now();
    let mut step = DinoStep::<M>::build_with(cfg, batch)?;
    step.init(run.seed);
    step.compile(CpuCompiler::default());
    let mut rt = StepRuntime::new(opts.device, &step.cx)?;
    let mut start = 0;
    if let Some((file, meta)) = &resumed {
        checkpoint::restore(&mut step, file, meta, &ckpt_path)?;
        if meta.niter_per_ep != niter {
            return Err(Error::Config {
                what: "--resume".into(),
                why: format!(
                    "the checkpoint has {} iterations per epoch, the data now gives {niter}",
                    meta.niter_per_ep
                ),
            });
        }
        start = meta.iteration;
        log::truncate(&log_path, start)?;
    } else {
        let _ = std::fs::remove_file(&log_path);
    }
    let config_json = serde_json::json!({ "run": run, "dino": cfg, "iterations_per_epoch": niter, "batch": batch });
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config_json).expect("json"))
        .map_err(io(out))?;
    if !opts.quiet {
        eprintln!(
            "{}: {} images ({} per step, {niter} steps per epoch, {} epochs), graph built and compiled in {:.1} s{}",
            run.preset,
            splits.train.len(),
            batch,
            cfg.epochs,
            t_build.elapsed().as_secs_f64(),
            if start > 0 { format!(", resuming at iteration {start}") } else { String::new() }
        );
    }

    let mut extractor = match (&splits.test, run.knn) {
        (Some(_), true) => Some(Extractor::<M>::new(256)?),
        (None, true) => {
            eprintln!("note: no labeled test split (give --val for an image folder): k-NN skipped");
            None
        }
        _ => None,
    };
    let ln_k = (cfg.head.out as f64).ln();
    let mut writer = log::Writer::append(&log_path)?;
    let mut report = TrainReport { checkpoint: ckpt_path.clone(), ..Default::default() };
    let t0 = Instant::now();
    let mut images_done = 0usize;
    let mut it = start;
    if let (Some(ex), Some(test), 0) = (&mut extractor, &splits.test, start) {
        // epoch 0: the random initialization (student = teacher), the baseline DINO must beat
        let r = knn_eval(ex, &teacher_weights(&step)?, splits.train.as_ref(), test.as_ref(), opts.quiet)?;
        if !opts.quiet {
            eprintln!("random init: {}", format_knn(&r));
        }
        writer.write(&Record::Epoch(EpochRecord {
            epoch: 0,
            iteration: 0,
            loss_mean: None,
            images_per_s: 0.0,
            bad_images: 0,
            knn: Some(r.clone()),
            elapsed_s: 0.0,
        }))?;
        report.knn.push((0, r));
    }
    let save = |step: &DinoStep<M>, it: usize| -> Result<()> {
        let meta = checkpoint::Meta {
            format: checkpoint::FORMAT.into(),
            preset: run.preset.clone(),
            iteration: it,
            niter_per_ep: niter,
            seed: run.seed,
            group_steps: step.optimizer.groups.iter().map(|g| (g.name.clone(), g.steps)).collect(),
            run: serde_json::to_value(&run).expect("json"),
        };
        checkpoint::save(&ckpt_path, step, &meta)
    };
    'epochs: for epoch in start / niter..cfg.epochs {
        let mut bar = Progress::new(&format!("epoch {}/{}", epoch + 1, cfg.epochs), niter as u64, opts.quiet);
        let (mut loss_sum, mut loss_n) = (0.0, 0usize);
        let t_epoch = Instant::now();
        let first = it;
        for b in loader.epoch(epoch, it - epoch * niter) {
            if opts.stop_after.is_some_and(|s| it >= s) {
                rt.sync(&mut step)?;
                save(&step, it)?;
                bar.println(&format!("stopped at iteration {it}; checkpoint {}", ckpt_path.display()));
                break 'epochs;
            }
            let t_step = Instant::now();
            let b = b?;
            for bad in loader.take_bad() {
                bar.println(&format!("warning: skipped unreadable image {}: {}", bad.source, bad.why));
            }
            step.set_batch(b.global, b.local)?;
            step.set_drop_masks(&mut ChaCha8Rng::seed_from_u64(derive_seed(run.seed, STREAM_DROP, it as u64, 0)));
            let h = schedules.at(it);
            step.set_hyper(&h);
            rt.execute(&mut step)?;
            let o = step.outputs()?;
            if !o.loss.is_finite() {
                let kept = if ckpt_path.exists() {
                    format!("the last good checkpoint, {}, is kept", ckpt_path.display())
                } else {
                    "no checkpoint was written yet".to_string()
                };
                return Err(Error::Config {
                    what: "training".into(),
                    why: format!(
                        "the loss is {} at iteration {it} (epoch {}): training stopped; {kept}. Lower the learning \
                         rate (--lr) or raise --warmup-epochs",
                        o.loss,
                        epoch + 1
                    ),
                });
            }
            step.advance();
            images_done += batch;
            loss_sum += o.loss as f64;
            loss_n += 1;
            report.losses.push((it, o.loss));
            let ips = images_done as f64 / t0.elapsed().as_secs_f64();
            if it % opts.log_every.max(1) == 0 || it + 1 == total {
                writer.write(&Record::Step(StepRecord {
                    epoch,
                    iteration: it,
                    loss: o.loss as f64,
                    ln_k,
                    teacher_entropy: o.teacher_entropy as f64,
                    teacher_mean_entropy: o.teacher_mean_entropy as f64,
                    kl_uniform: ln_k - o.teacher_entropy as f64,
                    lr: h.lr,
                    wd: h.weight_decay,
                    momentum: h.momentum,
                    teacher_temp: h.teacher_temp,
                    grad_norm: o.grad_norm as f64,
                    images_per_s: batch as f64 / t_step.elapsed().as_secs_f64(),
                    elapsed_s: t0.elapsed().as_secs_f64(),
                }))?;
            }
            it += 1;
            bar.set((it - epoch * niter) as u64, || format!("loss {:.4} | {ips:.0} img/s | lr {:.2e}", o.loss, h.lr));
        }
        bar.finish();
        if it < (epoch + 1) * niter {
            break; // stopped
        }
        rt.sync(&mut step)?;
        save(&step, it)?;
        if opts.save_every > 0 && (epoch + 1) % opts.save_every == 0 {
            std::fs::copy(&ckpt_path, out.join(format!("checkpoint{:04}.safetensors", epoch + 1))).map_err(io(out))?;
        }
        let knn = match (&mut extractor, &splits.test) {
            (Some(ex), Some(test)) => {
                let r = knn_eval(ex, &teacher_weights(&step)?, splits.train.as_ref(), test.as_ref(), opts.quiet)?;
                if !opts.quiet {
                    eprintln!("epoch {}: {}", epoch + 1, format_knn(&r));
                }
                report.knn.push((epoch + 1, r.clone()));
                Some(r)
            }
            _ => None,
        };
        let epoch_images = (it - first) * batch;
        writer.write(&Record::Epoch(EpochRecord {
            epoch: epoch + 1,
            iteration: it,
            loss_mean: Some(loss_sum / loss_n.max(1) as f64),
            images_per_s: epoch_images as f64 / t_epoch.elapsed().as_secs_f64(),
            bad_images: loader.bad_count(),
            knn,
            elapsed_s: t0.elapsed().as_secs_f64(),
        }))?;
        let records = log::read(&log_path)?;
        if let Err(e) =
            crate::plot::loss_plot(&out.join("loss.png"), &records, &format!("DINO {} training loss", run.preset))
        {
            eprintln!("warning: {e}");
        }
        if run.knn {
            let title = format!("DINO {}: weighted k-NN of the teacher", run.preset);
            if let Err(e) = crate::plot::knn_plot(&out.join("knn.png"), &records, &title) {
                eprintln!("warning: {e}");
            }
        }
    }
    let has_baseline = || log::read(&log_path).map(|r| r.iter().any(|r| matches!(r, Record::Baseline(_))));
    if let (Some(_), Some(test), true) = (&extractor, &splits.test, it == total && !has_baseline()?) {
        let (size, aug) = (cfg.global.size, &cfg.augment);
        let mut f = [splits.train.as_ref(), test.as_ref()].map(|d| eval::features::raw_pixels(d, size, channels, aug));
        for x in &mut f {
            eval::knn::l2_normalize(&mut x.data, x.dim);
        }
        let r = knn_of(&f[0], &f[1], splits.train.classes().len())?;
        if !opts.quiet {
            eprintln!("raw pixels: {}", format_knn(&r));
        }
        writer.write(&Record::Baseline(log::BaselineRecord {
            name: "raw pixels".into(),
            iteration: it,
            knn: r.clone(),
        }))?;
        report.raw_knn = Some(r);
        let records = log::read(&log_path)?;
        let title = format!("DINO {}: weighted k-NN of the teacher", run.preset);
        if let Err(e) = crate::plot::knn_plot(&out.join("knn.png"), &records, &title) {
            eprintln!("warning: {e}");
        }
    }
    report.iterations = it;
    report.images_per_s = images_done as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    report.bad_images = loader.bad_count();
    Ok(report)
}

/// `k=20 top-1 66.1% | k=10 ...` with k=20 first.
pub fn format_knn(r: &[KnnResult]) -> String {
    let mut v: Vec<&KnnResult> = r.iter().collect();
    v.sort_by_key(|x| (x.k != 20, x.k));
    v.iter().map(|x| format!("k={} top-1 {:.2}% top-5 {:.2}%", x.k, x.top1, x.top5)).collect::<Vec<_>>().join(" | ")
}
