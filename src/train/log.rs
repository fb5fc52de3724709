//! The training log: one JSON object per line (`log.jsonl`), a `step` record every few
//! iterations, an `epoch` record at the end of each epoch, a `health` record when the
//! collapse monitor raises a symptom.
use std::io::Write;
use std::path::Path;

use dino_runtime::{Error, Result};

use super::health::Alert;
use crate::eval::KnnResult;

/// What one logged iteration did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    pub epoch: usize,
    pub iteration: usize,
    pub loss: f64,
    /// ln K: the loss of a uniform student against any teacher distribution is at most this.
    pub ln_k: f64,
    /// Mean entropy of the teacher's sharpened distributions (0: one-hot, ln K: uniform).
    pub teacher_entropy: f64,
    /// Entropy of their batch mean (falls to 0 when every image gets the same prototype).
    pub teacher_mean_entropy: f64,
    /// KL(teacher || uniform) = ln K - teacher_entropy.
    pub kl_uniform: f64,
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
    pub teacher_temp: f64,
    pub grad_norm: f64,
    /// DINOv2's KoLeo term (unweighted), for objectives that declare it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub koleo: Option<f64>,
    /// iBOT's masked-patch loss (unweighted), for objectives that declare it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ibot: Option<f64>,
    pub images_per_s: f64,
    pub elapsed_s: f64,
}

/// The summary of one epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// Epochs completed.
    pub epoch: usize,
    pub iteration: usize,
    /// Mean loss of the epoch (none for epoch 0, the random initialization).
    pub loss_mean: Option<f64>,
    pub images_per_s: f64,
    pub bad_images: usize,
    pub knn: Option<Vec<KnnResult>>,
    pub elapsed_s: f64,
    /// Seconds of this session spent training: `elapsed_s` less the k-NN evaluations (absent
    /// from logs written before it was recorded).
    #[serde(default)]
    pub train_s: f64,
}

/// k-NN of a reference point (raw pixels), for comparison.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BaselineRecord {
    pub name: String,
    pub iteration: usize,
    pub knn: Vec<KnnResult>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Record {
    Step(StepRecord),
    Epoch(EpochRecord),
    Baseline(BaselineRecord),
    /// A collapse or a stall the trainer's monitor saw (raised once per run).
    Health(Alert),
}

impl Record {
    fn iteration(&self) -> usize {
        match self {
            Record::Step(s) => s.iteration,
            Record::Epoch(e) => e.iteration,
            Record::Baseline(b) => b.iteration,
            Record::Health(a) => a.iteration,
        }
    }
}

/// A log's records, and the torn last line a crash or a full disk left, if any.
#[derive(Debug, Default)]
pub struct Read {
    pub records: Vec<Record>,
    /// The unparsable last line (no newline after it): what an interrupted append leaves.
    pub torn: Option<String>,
}

/// Read a log (a missing file is an empty log). A torn last line is set apart, not an error;
/// an unreadable line before the last is one (naming the file and the line).
pub fn read_all(path: &Path) -> Result<Read> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::default()),
        Err(source) => return Err(Error::Io { path: path.to_path_buf(), source }),
    };
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Read::default();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(r) => out.records.push(r),
            Err(_) if i + 1 == lines.len() && !complete => out.torn = Some(line.to_string()),
            Err(e) => {
                return Err(Error::Format { path: path.to_path_buf(), why: format!("line {}: {e}", i + 1) });
            }
        }
    }
    Ok(out)
}

/// The records of a log (a torn last line is left out).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    Ok(read_all(path)?.records)
}

/// Keep only the records of iterations before `iteration` (resuming from a checkpoint drops
/// what a crashed run logged after it); step records at `iteration` are dropped, the epoch
/// record that ended there is kept. A torn last line is dropped; the notice saying so is
/// returned.
pub fn truncate(path: &Path, iteration: usize) -> Result<Option<String>> {
    let log = read_all(path)?;
    let kept: Vec<&Record> = log
        .records
        .iter()
        .filter(|r| match r {
            Record::Step(_) | Record::Health(_) => r.iteration() < iteration,
            Record::Epoch(_) | Record::Baseline(_) => r.iteration() <= iteration,
        })
        .collect();
    let mut text = String::new();
    for r in kept {
        text.push_str(&serde_json::to_string(r).expect("serializable"));
        text.push('\n');
    }
    dino_runtime::files::write_atomic(path, text.as_bytes())?;
    Ok(log.torn.map(|t| {
        let shown: String = t.chars().take(60).collect();
        format!(
            "note: {}: dropped a torn last line ({} bytes, `{shown}...`), left by an interrupted write",
            path.display(),
            t.len()
        )
    }))
}

/// Append records to the log, one line each, flushed.
pub struct Writer {
    /// None: a rank that writes no log (every rank of a data-parallel run but rank 0).
    file: Option<std::fs::File>,
    path: std::path::PathBuf,
}

impl Writer {
    pub fn append(path: &Path) -> Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Ok(Writer { file: Some(file), path: path.to_path_buf() })
    }

    /// A writer that writes nothing.
    pub fn none() -> Writer {
        Writer { file: None, path: Default::default() }
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        let mut line = serde_json::to_string(r).expect("serializable");
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(|source| Error::Io { path: self.path.clone(), source })
    }
}
