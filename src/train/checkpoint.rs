//! Training checkpoints: one safetensors file with the student (`student.*`), the teacher
//! (`teacher.*`), the optimizer state (`optimizer.<param>.<state>`), the center, and JSON
//! metadata (`dino` key): preset, next iteration, seed, optimizer step counts and the run's
//! configuration. Written atomically (temporary file, fsync, rename).
//!
//! Integrity: the metadata also holds a CRC-32 of every tensor's bytes (`crc32`), checked on
//! load with every value's finiteness; restoring checks every tensor's full shape. A flipped
//! byte, a tensor of NaN or a transposed tensor is refused naming the tensor and the file.
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

/// The format tag of our checkpoints (version 2: with per-tensor checksums).
pub const FORMAT: &str = "dino-checkpoint/2";
/// The format of the first round's checkpoints (no checksums): still read.
const FORMAT_V1: &str = "dino-checkpoint/1";
/// The metadata key of the checksums: a JSON map of tensor name to CRC-32.
const CHECKSUMS: &str = "crc32";

/// The CRC-32 of a tensor's little-endian f32 bytes (what the file stores).
fn crc32(data: &[f32]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for v in data {
        h.update(&v.to_le_bytes());
    }
    h.finalize()
}

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
    state(step, meta)?.save(path)
}

/// The state of `step` as a checkpoint's tensors and metadata (sealed with checksums).
pub fn state<M: DinoModel>(step: &DinoStep<M>, meta: &Meta) -> Result<TensorFile> {
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
    if let Some(i) = &step.ibot {
        let c = get(&step.train.cx, i.center, "ibot_center")?;
        f.insert("ibot_center", &[c.len()], c);
    }
    f.metadata.insert("dino".into(), serde_json::to_string(meta).expect("serializable"));
    seal(&mut f);
    Ok(f)
}

/// Put the checksums of the tensors into the metadata (what [`save`] does before writing).
pub fn seal(f: &mut TensorFile) {
    let sums: BTreeMap<&String, u32> = f.tensors.iter().map(|(k, t)| (k, crc32(&t.data))).collect();
    let sums = serde_json::to_string(&sums).expect("serializable");
    f.metadata.insert(CHECKSUMS.into(), sums);
}

/// Read a checkpoint and its metadata; a file that is not one of ours is a clear error.
pub fn load(path: &Path) -> Result<(TensorFile, Meta)> {
    checked(TensorFile::load(path)?, path)
}

/// The metadata of a checkpoint, from its header only (the tensors are not read).
pub fn read_meta(path: &Path) -> Result<Meta> {
    use std::io::Read;
    let bad = |why: String| Error::Format { path: path.to_path_buf(), why };
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| bad("not a safetensors file (shorter than its header)".into()))?;
    let n = u64::from_le_bytes(n);
    let len = f.metadata().map_err(io)?.len();
    if n > len.saturating_sub(8) || n > 100 << 20 {
        return Err(bad(format!("not a safetensors file (a header of {n} bytes in a file of {len})")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io)?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let raw =
        v["__metadata__"]["dino"].as_str().ok_or_else(|| bad("not a dino checkpoint (no `dino` metadata)".into()))?;
    serde_json::from_str(raw).map_err(|e| bad(format!("unreadable checkpoint metadata: {e}")))
}

/// A read safetensors file as one of our checkpoints: format, checksums and finiteness checked.
pub fn checked(f: TensorFile, path: &Path) -> Result<(TensorFile, Meta)> {
    let bad = |why: String| Error::Format { path: path.to_path_buf(), why };
    let raw = f.metadata.get("dino").ok_or_else(|| bad("not a dino checkpoint (no `dino` metadata)".into()))?;
    let meta: Meta = serde_json::from_str(raw).map_err(|e| bad(format!("unreadable checkpoint metadata: {e}")))?;
    match meta.format.as_str() {
        FORMAT => verify(&f, path)?,
        FORMAT_V1 => eprintln!("note: {} has no checksums (an older checkpoint format)", path.display()),
        other => return Err(bad(format!("checkpoint format `{other}`, this build reads `{FORMAT}`"))),
    }
    finite(&f, path)?;
    Ok((f, meta))
}

/// Every tensor's checksum matches the one saved with it (and no tensor lacks one).
fn verify(f: &TensorFile, path: &Path) -> Result<()> {
    let bad = |why: String| Error::Format { path: path.to_path_buf(), why };
    let raw = f.metadata.get(CHECKSUMS).ok_or_else(|| bad("no checksums in the metadata".into()))?;
    let sums: BTreeMap<String, u32> =
        serde_json::from_str(raw).map_err(|e| bad(format!("unreadable checksums: {e}")))?;
    for (name, t) in &f.tensors {
        let want = sums.get(name).ok_or_else(|| bad(format!("tensor `{name}` has no checksum")))?;
        let got = crc32(&t.data);
        if got != *want {
            return Err(bad(format!(
                "tensor `{name}` is damaged: its checksum is {got:08x}, the file says {want:08x}"
            )));
        }
    }
    if let Some(name) = sums.keys().find(|k| !f.tensors.contains_key(*k)) {
        return Err(bad(format!("tensor `{name}` is missing (the checksums list it)")));
    }
    Ok(())
}

/// Every value of every tensor is finite (a NaN or an infinity is never a state to resume).
fn finite(f: &TensorFile, path: &Path) -> Result<()> {
    for (name, t) in &f.tensors {
        let bad = t.data.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(Error::Format {
                path: path.to_path_buf(),
                why: format!("tensor `{name}` holds {bad} non-finite value(s) of {}", t.data.len()),
            });
        }
    }
    Ok(())
}

/// Put a checkpoint's tensors into `step` (every tensor must be present with its full shape).
pub fn restore<M: DinoModel>(step: &mut DinoStep<M>, f: &TensorFile, meta: &Meta, path: &Path) -> Result<()> {
    let bad = |why: String| Error::Format { path: path.to_path_buf(), why };
    let take = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = f.get(name).map_err(|_| bad(format!("missing tensor `{name}`")))?;
        if t.shape != shape {
            return Err(bad(format!("tensor `{name}` has shape {:?}, the model needs {shape:?}", t.shape)));
        }
        Ok(t.data.clone())
    };
    for p in step.student_params.params.clone() {
        let v = take(&format!("student.{}", p.name), &p.shape)?;
        step.student_params.set(&mut step.train.cx, &p.name, v)?;
    }
    for p in step.teacher_params.params.clone() {
        let v = take(&p.name, &p.shape)?;
        step.teacher_params.set(&mut step.train.cx, &p.name, v)?;
    }
    for (name, id, n) in step.train.optimizer.state_names() {
        let v = take(&format!("optimizer.{name}"), &[n])?;
        data::set(&mut step.train.cx, id, v);
        step.train.cx.no_delete.insert(id);
    }
    let k = step.config.head.out;
    let center = take("center", &[k])?;
    data::set(&mut step.train.cx, step.center, center);
    if let Some(i) = &step.ibot {
        let c = take("ibot_center", &[k])?;
        data::set(&mut step.train.cx, i.center, c);
    }
    for g in &mut step.train.optimizer.groups {
        g.steps = *meta.group_steps.get(&g.name).unwrap_or(&0);
    }
    Ok(())
}

/// The teacher's backbone weights of a checkpoint (`teacher.` removed from the names).
pub fn teacher_weights(f: &TensorFile) -> Weights {
    f.tensors.iter().filter_map(|(k, t)| k.strip_prefix("teacher.").map(|n| (n.to_string(), t.clone()))).collect()
}
