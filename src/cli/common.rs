//! What several subcommands share: the weights to evaluate, the device and threads to run on.
use std::path::PathBuf;

use clap::Args;

use crate::device::Device;
use crate::eval::Weights;
use crate::train::checkpoint;
use crate::weights;

#[derive(Debug, Clone, Args)]
pub struct WeightArgs {
    /// A training checkpoint of this project (its teacher, unless --key student).
    #[arg(long, conflicts_with_all = ["weights", "random_init"])]
    pub checkpoint: Option<PathBuf>,
    /// Backbone weights: timm-named or Hugging Face safetensors (config.json beside it), or an
    /// official DINO .pth (backbone-only or full checkpoint).
    #[arg(long, conflicts_with = "random_init")]
    pub weights: Option<PathBuf>,
    /// The network of a training checkpoint to use: teacher (as DINO evaluates) or student.
    #[arg(long, default_value = "teacher")]
    pub key: String,
    /// A randomly initialized backbone (seed --seed), for comparison.
    #[arg(long)]
    pub random_init: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The backbone or DINO preset [default: the checkpoint's preset, or inferred from the
    /// weights' shapes].
    #[arg(long)]
    pub model: Option<String>,
}

/// Weights, their LayerNorm epsilon if not the declared one, and the model name.
pub fn resolve(w: &WeightArgs) -> Result<(Option<Weights>, Option<f32>, String), String> {
    if let Some(path) = &w.checkpoint {
        let (f, meta) = checkpoint::load(path).map_err(|e| e.to_string())?;
        let prefix = format!("{}.backbone.", w.key);
        let wts: Weights = f
            .tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|n| (n.to_string(), t.clone())))
            .collect();
        if wts.is_empty() {
            return Err(format!("{}: no `{prefix}*` tensors (--key teacher or student)", path.display()));
        }
        return Ok((Some(wts), None, w.model.clone().unwrap_or(meta.preset)));
    }
    if let Some(path) = &w.weights {
        let b = weights::load(path, &w.key).map_err(|e| e.to_string())?;
        let name = match &w.model {
            Some(m) => m.clone(),
            None => b.zoo_name(path).map_err(|e| e.to_string())?.to_string(),
        };
        return Ok((Some(b.weights()), b.eps.map(|e| e as f32), name));
    }
    if w.random_init {
        return Ok((None, None, w.model.clone().unwrap_or_else(|| "fmnist-small".into())));
    }
    Err("give --checkpoint PATH, --weights PATH or --random-init".into())
}

/// Where and on how many threads a command runs.
#[derive(Debug, Clone, Copy, Args)]
pub struct RunOn {
    /// Where the networks run: cpu, or cuda (the first NVIDIA GPU; needs a binary built with
    /// `--features cuda` and the CUDA 13 driver and libraries at run time).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

impl RunOn {
    /// Size rayon's global pool (every kernel and the data loader use it) and check the device
    /// once, before any data is read.
    pub fn apply(&self) -> Result<Device, String> {
        set_threads(self.threads)?;
        self.device.check().map_err(|e| e.to_string())?;
        Ok(self.device)
    }
}

/// Size rayon's global pool (every kernel and the data loader use it).
pub fn set_threads(threads: Option<usize>) -> Result<(), String> {
    match threads {
        Some(0) => Err("--threads must be at least 1".into()),
        Some(n) => rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// A fraction in (0, 1] (a mass threshold): NaN, 0, negative and > 1 refused with the range.
pub fn unit_fraction(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        Ok(v) => Err(format!("{v} is outside (0, 1]")),
        Err(e) => Err(e.to_string()),
    }
}
