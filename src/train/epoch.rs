//! One epoch of DINO training and what follows it (the reference's `train_one_epoch` and the
//! end of its epoch loop): the state shared by the epochs, the k-NN monitor, the checkpoint,
//! the logs and plots, and the raw-pixel baseline.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dino_runtime::config::DinoConfig;
use dino_runtime::data::loader::derive_seed;
use dino_runtime::data::{Dataset, Loader};
use dino_runtime::dino::{DinoStep, Schedules};
use dino_runtime::dist::Group;
use dino_runtime::model::DinoModel;
use dino_runtime::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::health::Monitor;
use super::log::{self, EpochRecord, Record, StepRecord};
use super::{checkpoint, teacher_weights, RunConfig, TrainOptions, TrainReport};
use crate::eval::knn_eval::{format_knn, knn_eval_ranks, raw_pixel_knn};
use crate::eval::{Extractor, KnnResult};
use crate::progress::Progress;

/// The stream of stochastic-depth masks (the loader uses streams 1 and 2).
const STREAM_DROP: u64 = 3;
/// The stream of iBOT's patch masks.
const STREAM_IBOT_MASKS: u64 = 4;

/// The weighted k-NN monitor of a run: a feature extractor on the run's device and the splits.
pub(super) struct KnnMonitor<'a, M: DinoModel> {
    pub(super) ex: Extractor<M>,
    pub(super) train: &'a dyn Dataset,
    pub(super) test: &'a dyn Dataset,
    pub(super) quiet: bool,
    /// The ranks share the feature extraction and the votes.
    pub(super) group: Group,
}

impl<M: DinoModel> KnnMonitor<'_, M> {
    /// k-NN of the step's teacher now (its state must be on the host).
    pub(super) fn eval(&mut self, step: &DinoStep<M>) -> Result<Vec<KnnResult>> {
        knn_eval_ranks(&mut self.ex, &teacher_weights(step)?, self.train, self.test, self.quiet, &*self.group)
    }
}

/// What one epoch did.
pub(super) struct EpochOutcome {
    pub(super) loss_sum: f64,
    pub(super) steps: usize,
    /// Stopped by `--stop-after` (a checkpoint was written).
    pub(super) stopped: bool,
}

/// Everything the epochs share.
pub(super) struct Loop<'a> {
    pub(super) opts: &'a TrainOptions,
    pub(super) run: &'a RunConfig,
    pub(super) loader: &'a Arc<Loader>,
    pub(super) schedules: &'a Schedules,
    pub(super) niter: usize,
    pub(super) total: usize,
    pub(super) ckpt_path: &'a Path,
    pub(super) log_path: PathBuf,
    pub(super) writer: log::Writer,
    pub(super) report: TrainReport,
    pub(super) t0: Instant,
    /// Seconds of this session spent in k-NN evaluations (not training).
    pub(super) eval_s: f64,
    pub(super) images_done: usize,
    /// The iteration this session resumed at, if it resumed.
    pub(super) resumed_at: Option<usize>,
    /// The iteration of the checkpoint on disk (saved by this session or resumed from).
    pub(super) last_saved: Option<usize>,
    /// Watches the logged steps for collapse.
    pub(super) health: Monitor,
    /// No progress output: `--quiet`, or a rank other than 0.
    pub(super) quiet: bool,
}

impl Loop<'_> {
    /// Seconds of this session spent training: the wall clock less the k-NN evaluations.
    pub(super) fn train_s(&self) -> f64 {
        (self.t0.elapsed().as_secs_f64() - self.eval_s).max(0.0)
    }

    /// Write the step's state (on the host) to the run's checkpoint (rank 0 alone writes).
    pub(super) fn save<M: DinoModel>(&mut self, step: &DinoStep<M>, it: usize) -> Result<()> {
        if !self.opts.group.is_root() {
            self.last_saved = Some(it);
            return Ok(());
        }
        let meta = checkpoint::Meta {
            format: checkpoint::FORMAT.into(),
            preset: self.run.preset.clone(),
            iteration: it,
            niter_per_ep: self.niter,
            seed: self.run.seed,
            group_steps: step.train.optimizer.groups.iter().map(|g| (g.name.clone(), g.steps)).collect(),
            run: serde_json::to_value(self.run).expect("json"),
        };
        checkpoint::save(self.ckpt_path, step, &meta)?;
        self.last_saved = Some(it);
        Ok(())
    }

    /// What a non-finite loss at iteration `it` leaves, and what to try.
    fn after_non_finite(&self, it: usize) -> String {
        let ckpt = self.ckpt_path.display();
        match (self.resumed_at, self.last_saved) {
            (Some(r), _) if r == it => format!(
                "; it is the first iteration after resuming from {ckpt}, whose tensors passed their checksum and \
                 finiteness checks: the state saved there diverges with the run's own hyperparameters. The file is \
                 left as it was; start a new run (another --out) with a lower --lr or a longer --warmup-epochs"
            ),
            (_, Some(at)) => format!(
                "; the last checkpoint, {ckpt} (iteration {at}), is kept. Lower the learning rate (--lr) or raise \
                 --warmup-epochs"
            ),
            (_, None) => {
                "; no checkpoint was written yet. Lower the learning rate (--lr) or raise --warmup-epochs".into()
            }
        }
    }
}

/// After a whole epoch: the state to the host, the checkpoint (and a numbered copy), the
/// teacher's k-NN, the epoch record, the plots.
#[allow(clippy::too_many_arguments)]
pub(super) fn end_of_epoch<M: DinoModel>(
    lp: &mut Loop<'_>,
    step: &mut DinoStep<M>,
    knn: Option<&mut KnnMonitor<'_, M>>,
    epoch: usize,
    it: usize,
    e: &EpochOutcome,
    first: usize,
    t_epoch: Instant,
) -> Result<()> {
    let out = &lp.opts.out;
    step.train.sync()?;
    lp.save(step, it)?;
    let root = lp.opts.group.is_root();
    if root && lp.run.save_every > 0 && (epoch + 1) % lp.run.save_every == 0 {
        dino_runtime::files::copy_atomic(lp.ckpt_path, &out.join(format!("checkpoint{:04}.safetensors", epoch + 1)))?;
    }
    let eval_before = lp.eval_s;
    let knn_r = match knn {
        Some(k) => {
            let t_eval = Instant::now();
            let r = k.eval(step)?;
            lp.eval_s += t_eval.elapsed().as_secs_f64();
            if !lp.quiet {
                eprintln!("epoch {} ({:.1} min of training): {}", epoch + 1, lp.train_s() / 60.0, format_knn(&r));
            }
            lp.report.knn.push((epoch + 1, r.clone()));
            Some(r)
        }
        None => None,
    };
    let eval_s = lp.eval_s - eval_before;
    lp.writer.write(&Record::Epoch(EpochRecord {
        epoch: epoch + 1,
        iteration: it,
        loss_mean: Some(e.loss_sum / e.steps.max(1) as f64),
        images_per_s: ((it - first) * lp.loader.batch) as f64 / (t_epoch.elapsed().as_secs_f64() - eval_s).max(1e-9),
        bad_images: lp.loader.bad_count(),
        knn: knn_r,
        elapsed_s: lp.t0.elapsed().as_secs_f64(),
        train_s: lp.train_s(),
    }))?;
    if !root {
        return Ok(());
    }
    let records = log::read(&lp.log_path)?;
    let title = format!("DINO {} training loss", lp.run.preset);
    if let Err(e) = crate::plot::loss_plot(&out.join("loss.png"), &records, &title) {
        eprintln!("warning: {e}");
    }
    let title = format!("DINO {}", lp.run.preset);
    if let Err(e) = crate::plot::diagnostics_plot(&out.join("diagnostics.png"), &records, &title) {
        eprintln!("warning: {e}");
    }
    if lp.run.knn {
        knn_plot(out, &records, &lp.run.preset);
    }
    Ok(())
}

/// The k-NN of the raw pixels, logged once per run (a resumed complete run has it already).
pub(super) fn raw_pixel_baseline<M: DinoModel>(
    lp: &mut Loop<'_>,
    k: &KnnMonitor<'_, M>,
    cfg: &DinoConfig,
    it: usize,
) -> Result<()> {
    if log::read(&lp.log_path)?.iter().any(|r| matches!(r, Record::Baseline(_))) {
        return Ok(());
    }
    let t_eval = Instant::now();
    let r = raw_pixel_knn(k.train, k.test, cfg.global.size, cfg.backbone.channels, &cfg.augment)?;
    lp.eval_s += t_eval.elapsed().as_secs_f64();
    if !lp.quiet {
        eprintln!("raw pixels: {}", format_knn(&r));
    }
    lp.writer.write(&Record::Baseline(log::BaselineRecord {
        name: "raw pixels".into(),
        iteration: it,
        knn: r.clone(),
    }))?;
    lp.report.raw_knn = Some(r);
    knn_plot(&lp.opts.out, &log::read(&lp.log_path)?, &lp.run.preset);
    Ok(())
}

/// One epoch of DINO steps from iteration `*it` (mid-epoch when resuming): crops, drop-path
/// masks and schedules in, one graph run, the loss and diagnostics out, the state moved on.
pub(super) fn train_one_epoch<M: DinoModel>(
    lp: &mut Loop<'_>,
    step: &mut DinoStep<M>,
    epoch: usize,
    it: &mut usize,
) -> Result<EpochOutcome> {
    // images per step over all ranks
    let (opts, niter, batch) = (lp.opts, lp.niter, lp.loader.batch);
    let group = &opts.group;
    let cfg_epochs = step.config.epochs;
    let ln_k = (step.config.head.out as f64).ln();
    let mut bar = Progress::new(&format!("epoch {}/{}", epoch + 1, cfg_epochs), niter as u64, lp.quiet);
    let mut e = EpochOutcome { loss_sum: 0.0, steps: 0, stopped: false };
    for b in lp.loader.epoch(epoch, *it - epoch * niter) {
        if opts.stop_after.is_some_and(|s| *it >= s) {
            step.train.sync()?;
            lp.save(step, *it)?;
            if group.is_root() {
                bar.println(&format!("stopped at iteration {it}; checkpoint {}", lp.ckpt_path.display()));
            }
            e.stopped = true;
            break;
        }
        let t_step = Instant::now();
        let b = b?;
        // each rank reads (and reports) the images of its own shard
        let who = if group.world() > 1 { format!("rank {}: ", group.rank()) } else { String::new() };
        for bad in lp.loader.take_bad() {
            bar.println(&format!("warning: {who}skipped unreadable image {}: {}", bad.source, bad.why));
        }
        step.set_batch(b.global, b.local)?;
        let mut drop_rng = ChaCha8Rng::seed_from_u64(derive_seed(lp.run.seed, STREAM_DROP, *it as u64, 0));
        step.set_drop_masks_of_rank(&mut drop_rng, group.rank());
        let mut mask_rng = ChaCha8Rng::seed_from_u64(derive_seed(lp.run.seed, STREAM_IBOT_MASKS, *it as u64, 0));
        step.set_ibot_masks_of_rank(&mut mask_rng, group.rank());
        let h = lp.schedules.at(*it);
        step.set_hyper(&h);
        step.train.run()?;
        // the whole global batch's numbers, the same on every rank (so every rank stops together)
        let o = step.outputs()?.mean_over(&**group)?;
        if !o.loss.is_finite() {
            return Err(Error::NonFiniteLoss {
                value: o.loss,
                iteration: *it,
                epoch: Some(epoch + 1),
                context: lp.after_non_finite(*it),
            });
        }
        step.advance();
        lp.images_done += batch;
        e.loss_sum += o.loss as f64;
        e.steps += 1;
        lp.report.losses.push((*it, o.loss));
        // training time only: the k-NN evaluations between epochs are not the step's
        let ips = lp.images_done as f64 / lp.train_s().max(1e-9);
        if *it % lp.run.log_every.max(1) == 0 || *it + 1 == lp.total {
            let rec = StepRecord {
                epoch,
                iteration: *it,
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
                koleo: o.koleo.map(f64::from),
                ibot: o.ibot.map(f64::from),
                images_per_s: batch as f64 / t_step.elapsed().as_secs_f64(),
                elapsed_s: lp.t0.elapsed().as_secs_f64(),
            };
            let alert = lp.health.observe(&rec);
            lp.writer.write(&Record::Step(rec))?;
            if let (Some(a), true) = (alert, group.is_root()) {
                bar.println(&a.message());
                lp.writer.write(&Record::Health(a.clone()))?;
                lp.report.alerts.push(a);
            }
        }
        *it += 1;
        // a ViT-S/14 step on 2 cores runs below 1 image/s: keep two significant digits there
        let digits = (ips < 10.0) as usize + (ips < 1.0) as usize;
        bar.set((*it - epoch * niter) as u64, || {
            format!("loss {:.4} | {ips:.digits$} img/s | lr {:.2e}", o.loss, h.lr)
        });
    }
    bar.finish();
    Ok(e)
}

/// Redraw the run's k-NN plot (a failure is a warning: the run goes on).
fn knn_plot(out: &Path, records: &[Record], preset: &str) {
    let title = format!("DINO {preset}: weighted k-NN of the teacher");
    if let Err(e) = crate::plot::knn_plot(&out.join("knn.png"), records, &title) {
        eprintln!("warning: {e}");
    }
}
