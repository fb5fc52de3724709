//! Opening a run, new or resumed, and sharing it over the ranks: rank 0 alone reads and
//! writes the run's directory; the configuration it found and the state it starts from reach
//! every other rank by broadcast.
use std::path::{Path, PathBuf};

use dino_runtime::dino::DinoStep;
use dino_runtime::dist::Group;
use dino_runtime::model::DinoModel;
use dino_runtime::tensors::TensorFile;
use dino_runtime::{Error, Result};

use super::{checkpoint, log, Hyper, RunConfig, TrainOptions};

/// The files a run writes into its directory (numbered checkpoints too: `checkpoint*.safetensors`).
const RUN_FILES: [&str; 5] = ["config.json", "log.jsonl", "loss.png", "knn.png", "checkpoint.safetensors"];

fn is_run_file(name: &str) -> bool {
    RUN_FILES.contains(&name) || (name.starts_with("checkpoint") && name.ends_with(".safetensors"))
}

/// Does `out` hold a run of this program (a `config.json` with a run configuration)?
fn holds_a_run(out: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(out.join("config.json")) else { return false };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("run").cloned())
        .is_some_and(|r| serde_json::from_value::<RunConfig>(r).is_ok())
}

/// A new run may go into `out` if it is missing, empty, or a run of ours; with `force`, also a
/// directory of other files, but never over a file of a run's names that it did not write.
fn check_out_dir(out: &Path, force: bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else { return Ok(()) };
    let names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if names.is_empty() || holds_a_run(out) {
        return Ok(());
    }
    let what = format!("--out {}", out.display());
    let mut clash: Vec<&str> = names.iter().map(String::as_str).filter(|n| is_run_file(n)).collect();
    clash.sort();
    if !clash.is_empty() {
        return Err(Error::Config {
            what,
            why: format!(
                "holds {} but no run of this program (no config.json of a run): they would be replaced; choose \
                 another directory",
                clash.join(", ")
            ),
        });
    }
    if !force {
        let mut some: Vec<&str> = names.iter().map(String::as_str).take(3).collect();
        some.sort();
        return Err(Error::Config {
            what,
            why: format!(
                "is not empty and holds no run ({} entries, e.g. {}): pass --force to write the run beside them, or \
                 choose another directory",
                names.len(),
                some.join(", ")
            ),
        });
    }
    Ok(())
}

/// The training-affecting differences between a resumed run and the saved one: (flag, saved,
/// given).
fn changes(saved: &RunConfig, run: &RunConfig) -> Vec<(String, String, String)> {
    let mut out = vec![];
    let mut diff = |flag: &str, a: String, b: String| {
        if a != b {
            out.push((flag.to_string(), a, b));
        }
    };
    diff("--model", saved.preset.clone(), run.preset.clone());
    diff("--data", format!("{:?}", saved.data), format!("{:?}", run.data));
    diff("--seed", saved.seed.to_string(), run.seed.to_string());
    diff("--limit", format!("{:?}", saved.limit), format!("{:?}", run.limit));
    diff("--precision", saved.precision.to_string(), run.precision.to_string());
    // hyperparameters: none given (all default) keeps the run's
    if run.hyper != Hyper::default() {
        let json = |h: &Hyper| serde_json::to_value(h).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default();
        let (a, b) = (json(&saved.hyper), json(&run.hyper));
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let show = |v: Option<&serde_json::Value>| match v {
            None | Some(serde_json::Value::Null) => "the recipe's value".to_string(),
            Some(v) => v.to_string(),
        };
        for k in keys {
            diff(&format!("--{}", k.replace('_', "-")), show(a.get(k)), show(b.get(k)));
        }
    }
    out
}

/// The run to train: the saved one when resuming (the same run continues: a change that would
/// make it differ is refused, naming the flag; evaluation and logging options may change,
/// with a notice), else the one given. Refuses to start over a checkpoint or over files it
/// did not write.
fn open_run(opts: &TrainOptions, ckpt_path: &Path) -> Result<(RunConfig, Option<(TensorFile, checkpoint::Meta)>)> {
    let run = opts.run.clone();
    if !opts.resume {
        if ckpt_path.exists() {
            return Err(Error::Config {
                what: format!("--out {}", opts.out.display()),
                why: "already holds a checkpoint: pass --resume to continue that run, or choose another directory"
                    .into(),
            });
        }
        check_out_dir(&opts.out, opts.force)?;
        return Ok((run, None));
    }
    let (file, meta) = checkpoint::load(ckpt_path)?;
    let mut saved: RunConfig = serde_json::from_value(meta.run.clone())
        .map_err(|e| Error::Format { path: ckpt_path.to_path_buf(), why: format!("run configuration: {e}") })?;
    let changed = changes(&saved, &run);
    if !changed.is_empty() {
        let list: Vec<String> = changed.iter().map(|(f, a, b)| format!("{f} {b} (the run has {a})")).collect();
        return Err(Error::Config {
            what: "--resume".into(),
            why: format!(
                "{} holds a run that these options would change: {}. A resumed run continues exactly; drop them, or \
                 start a new run in another --out",
                ckpt_path.display(),
                list.join(", ")
            ),
        });
    }
    // what does not change the training may: evaluation and logging
    let mut notes = vec![];
    let mut note = |flag: &str, a: String, b: String| {
        if a != b {
            notes.push(format!("{flag} {b} (was {a})"));
        }
    };
    note("--val", format!("{:?}", saved.val), format!("{:?}", run.val));
    note("--test-limit", format!("{:?}", saved.test_limit), format!("{:?}", run.test_limit));
    note("--knn", saved.knn.to_string(), run.knn.to_string());
    note("--log-every", saved.log_every.to_string(), run.log_every.to_string());
    note("--save-every", saved.save_every.to_string(), run.save_every.to_string());
    if !notes.is_empty() {
        eprintln!("note: the resumed run now uses {}", notes.join(", "));
    }
    saved.val = run.val;
    saved.test_limit = run.test_limit;
    saved.knn = run.knn;
    saved.log_every = run.log_every;
    saved.save_every = run.save_every;
    Ok((saved, Some((file, meta))))
}

/// What rank 0 found when opening the run, as every rank gets it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Opened {
    run: RunConfig,
    /// The checkpoint's metadata when resuming (its tensors reach the other ranks with the
    /// initial state).
    resumed: Option<checkpoint::Meta>,
}

/// [`open_run`] on rank 0, its outcome (or its error) on every rank: the other ranks touch no
/// file of the run.
pub(super) fn shared_run(
    opts: &TrainOptions,
    ckpt_path: &Path,
) -> Result<(RunConfig, Option<checkpoint::Meta>, Option<TensorFile>)> {
    let group = &opts.group;
    if group.world() == 1 {
        let (run, resumed) = open_run(opts, ckpt_path)?;
        let (file, meta) = resumed.map_or((None, None), |(f, m)| (Some(f), Some(m)));
        return Ok((run, meta, file));
    }
    let mine = group.is_root().then(|| open_run(opts, ckpt_path));
    let mut bytes = match &mine {
        Some(Ok((run, resumed))) => {
            let o = Opened { run: run.clone(), resumed: resumed.as_ref().map(|r| r.1.clone()) };
            serde_json::to_vec(&Ok::<Opened, String>(o)).expect("json")
        }
        Some(Err(e)) => serde_json::to_vec(&Err::<Opened, String>(e.to_string())).expect("json"),
        None => vec![],
    };
    group.broadcast_bytes("the run's configuration", &mut bytes, 0)?;
    match mine {
        Some(r) => {
            let (run, resumed) = r?;
            let (file, meta) = resumed.map_or((None, None), |(f, m)| (Some(f), Some(m)));
            Ok((run, meta, file))
        }
        None => match serde_json::from_slice::<std::result::Result<Opened, String>>(&bytes) {
            Ok(Ok(o)) => Ok((o.run, o.resumed, None)),
            Ok(Err(why)) => Err(Error::Collective {
                op: "opening the run".into(),
                rank: group.rank(),
                world: group.world(),
                why: format!("rank 0 failed: {why}"),
            }),
            Err(e) => Err(Error::Collective {
                op: "opening the run".into(),
                rank: group.rank(),
                world: group.world(),
                why: format!("rank 0 sent an unreadable configuration: {e}"),
            }),
        },
    }
}

/// Put the checkpoint's state into `step`; the iteration to continue from. The log is cut
/// back to it.
pub(super) fn resume<M: DinoModel>(
    step: &mut DinoStep<M>,
    file: &TensorFile,
    meta: &checkpoint::Meta,
    ckpt_path: &Path,
    log_path: &Path,
    niter: usize,
) -> Result<usize> {
    check_resumed_epoch_length(meta, niter, ckpt_path)?;
    checkpoint::restore(step, file, meta, ckpt_path)?;
    if let Some(notice) = log::truncate(log_path, meta.iteration)? {
        eprintln!("{notice}");
    }
    Ok(meta.iteration)
}

/// A resumed run must see the epochs it was saved with (same data, same global batch: the
/// number of ranks may change).
pub(super) fn check_resumed_epoch_length(meta: &checkpoint::Meta, niter: usize, ckpt_path: &Path) -> Result<()> {
    if meta.niter_per_ep != niter {
        return Err(Error::Config {
            what: format!("--resume from {}", ckpt_path.display()),
            why: format!("the checkpoint has {} iterations per epoch, the data now gives {niter}", meta.niter_per_ep),
        });
    }
    Ok(())
}

/// Rank 0's whole state (student, teacher, optimizer state and step counts, center) to every
/// rank, through the checkpoint's own encoding (checksums verified on arrival): the replicas
/// start equal whether the run is new or resumed, and a resumed run needs its checkpoint on
/// rank 0's machine only.
pub(super) fn broadcast_state<M: DinoModel>(
    step: &mut DinoStep<M>,
    group: &Group,
    run: &RunConfig,
    iteration: usize,
    niter: usize,
) -> Result<()> {
    let mut bytes = vec![];
    if group.is_root() {
        let meta = checkpoint::Meta {
            format: checkpoint::FORMAT.into(),
            preset: run.preset.clone(),
            iteration,
            niter_per_ep: niter,
            seed: run.seed,
            group_steps: step.train.optimizer.groups.iter().map(|g| (g.name.clone(), g.steps)).collect(),
            run: serde_json::to_value(run).expect("json"),
        };
        bytes = checkpoint::state(step, &meta)?.to_bytes()?;
    }
    group.broadcast_bytes("the initial state from rank 0", &mut bytes, 0)?;
    if !group.is_root() {
        let from = PathBuf::from("<the state broadcast by rank 0>");
        let (file, meta) = checkpoint::checked(TensorFile::from_bytes(&bytes, &from)?, &from)?;
        checkpoint::restore(step, &file, &meta, &from)?;
    }
    Ok(())
}
