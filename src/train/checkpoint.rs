//! Training checkpoints: one safetensors file with the student (`student.*`), the teacher
//! (`teacher.*`), the optimizer state (`optimizer.<param>.<state>`), the center, and JSON
//! metadata (`dino` key): preset, next iteration, seed, optimizer step counts and the run's
//! configuration. Written atomically (temporary file, fsync, rename).
//!
//! Every random choice of a run (image order, crops, stochastic-depth masks) is a function of
//! the seed and the iteration, so the seed and the iteration are the complete RNG state.
use std::collections::BTreeMap;
use std::path::Path;

use dino_runtime::dino::DinoStep;
use dino_runtime::graph::data;
use dino_runtime::model::DinoModel;
use dino_runtime::tensors::TensorFile;
use dino_runtime::{Error, Result};

use crate::eval::Weights;

/// The format tag of our checkpoints.
pub const FORMAT: &str = "dino-checkpoint/1";

/// A checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub format: String,
    pub preset: String,
    /// The next iteration to run (iterations done so far).
    pub iteration: usize,
    pub niter_per_ep: usize,
    pub seed: u64,
    /// Optimizer updates per parameter group (AdamW's bias correction needs them).
    pub group_steps: BTreeMap<String, u64>,
    /// The run's configuration (`config.json`'s `run`).
    pub run: serde_json::Value,
}

impl Meta {
    /// Completed epochs.
    pub fn epoch(&self) -> usize {
        self.iteration / self.niter_per_ep.max(1)
    }
}

fn get(step_cx: &luminal::prelude::Graph, id: luminal::prelude::NodeIndex, name: &str) -> Result<Vec<f32>> {
    Ok(data::get_or_err(step_cx, id, name)?.to_vec())
}

/// Write the state of `step` to `path`.
pub fn save<M: DinoModel>(path: &Path, step: &DinoStep<M>, meta: &Meta) -> Result<()> {
    let mut f = TensorFile::default();
    for p in &step.student_params.params {
        f.insert(format!("student.{}", p.name), &p.shape, get(&step.train.cx, p.id, &p.name)?);
    }
    for p in &step.teacher_params.params {
        f.insert(p.name.clone(), &p.shape, get(&step.train.cx, p.id, &p.name)?);
    }
    for (name, id, n) in step.train.optimizer.state_names() {
        f.insert(format!("optimizer.{name}"), &[n], get(&step.train.cx, id, &name)?);
    }
    let center = get(&step.train.cx, step.center, "center")?;
    f.insert("center", &[center.len()], center);
    f.metadata.insert("dino".into(), serde_json::to_string(meta).expect("serializable"));
    f.save(path)
}

/// Read a checkpoint and its metadata; a file that is not one of ours is a clear error.
pub fn load(path: &Path) -> Result<(TensorFile, Meta)> {
    let f = TensorFile::load(path)?;
    let bad = |why: String| Error::Format { path: path.to_path_buf(), why };
    let raw = f.metadata.get("dino").ok_or_else(|| bad("not a dino checkpoint (no `dino` metadata)".into()))?;
    let meta: Meta = serde_json::from_str(raw).map_err(|e| bad(format!("unreadable checkpoint metadata: {e}")))?;
    if meta.format != FORMAT {
        return Err(bad(format!("checkpoint format `{}`, this build reads `{FORMAT}`", meta.format)));
    }
    Ok((f, meta))
}

/// Put a checkpoint's tensors into `step` (every tensor must be present with its size).
pub fn restore<M: DinoModel>(step: &mut DinoStep<M>, f: &TensorFile, meta: &Meta, path: &Path) -> Result<()> {
    let bad = |why: String| Error::Format { path: path.to_path_buf(), why };
    let take = |name: &str, n: usize| -> Result<Vec<f32>> {
        let t = f.get(name).map_err(|_| bad(format!("missing tensor `{name}`")))?;
        if t.data.len() != n {
            return Err(bad(format!("tensor `{name}` has {} values, the model needs {n}", t.data.len())));
        }
        Ok(t.data.clone())
    };
    for p in step.student_params.params.clone() {
        let v = take(&format!("student.{}", p.name), p.numel())?;
        step.student_params.set(&mut step.train.cx, &p.name, v)?;
    }
    for p in step.teacher_params.params.clone() {
        let v = take(&p.name, p.numel())?;
        step.teacher_params.set(&mut step.train.cx, &p.name, v)?;
    }
    for (name, id, n) in step.train.optimizer.state_names() {
        let v = take(&format!("optimizer.{name}"), n)?;
        data::set(&mut step.train.cx, id, v);
        step.train.cx.no_delete.insert(id);
    }
    let k = step.config.head.out;
    let center = take("center", k)?;
    data::set(&mut step.train.cx, step.center, center);
    for g in &mut step.train.optimizer.groups {
        g.steps = *meta.group_steps.get(&g.name).unwrap_or(&0);
    }
    Ok(())
}

/// The teacher's backbone weights of a checkpoint (`teacher.` removed from the names).
pub fn teacher_weights(f: &TensorFile) -> Weights {
    f.tensors.iter().filter_map(|(k, t)| k.strip_prefix("teacher.").map(|n| (n.to_string(), t.data.clone()))).collect()
}
