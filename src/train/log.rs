//! The training log: one JSON object per line (`log.jsonl`), a `step` record every few
//! iterations and an `epoch` record at the end of each epoch.
use std::io::{BufRead, Write};
use std::path::Path;

use dino_runtime::{Error, Result};

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
}

impl Record {
    fn iteration(&self) -> usize {
        match self {
            Record::Step(s) => s.iteration,
            Record::Epoch(e) => e.iteration,
            Record::Baseline(b) => b.iteration,
        }
    }
}

/// Read a log (a missing file is an empty log).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => return Err(Error::Io { path: path.to_path_buf(), source }),
    };
    let mut out = vec![];
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let r = serde_json::from_str(&line)
            .map_err(|e| Error::Format { path: path.to_path_buf(), why: format!("line {}: {e}", i + 1) })?;
        out.push(r);
    }
    Ok(out)
}

/// Keep only the records of iterations before `iteration` (resuming from a checkpoint drops
/// what a crashed run logged after it); step records at `iteration` are dropped, the epoch
/// record that ended there is kept.
pub fn truncate(path: &Path, iteration: usize) -> Result<()> {
    let kept: Vec<Record> = read(path)?
        .into_iter()
        .filter(|r| match r {
            Record::Step(_) => r.iteration() < iteration,
            Record::Epoch(_) | Record::Baseline(_) => r.iteration() <= iteration,
        })
        .collect();
    let mut text = String::new();
    for r in &kept {
        text.push_str(&serde_json::to_string(r).expect("serializable"));
        text.push('\n');
    }
    dino_runtime::files::write_atomic(path, text.as_bytes())
}

/// Append records to the log, one line each, flushed.
pub struct Writer {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl Writer {
    pub fn append(path: &Path) -> Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Ok(Writer { file, path: path.to_path_buf() })
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        let mut line = serde_json::to_string(r).expect("serializable");
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(|source| Error::Io { path: self.path.clone(), source })
    }
}
