//! What several subcommands share: the weights to evaluate, the device and threads to run on.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use dino_runtime::config::VitConfig;
use dino_runtime::model::VitModel;

use crate::device::Device;
use crate::eval::features::param_shapes;
use crate::eval::Weights;
use crate::models::Preset;
use crate::train::checkpoint;
use crate::weights;

#[derive(Debug, Clone, Args)]
pub struct WeightArgs {
    /// A training checkpoint of this project (its teacher, unless --key student).
    #[arg(long, conflicts_with_all = ["weights", "random_init"])]
    pub checkpoint: Option<PathBuf>,
    /// Backbone weights: timm-named or Hugging Face safetensors (a model directory, or the file
    /// with its config.json beside it), or an official DINO .pth (backbone-only or full
    /// checkpoint).
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
    /// Load weights that hold tensors the backbone has no place for (listed, then dropped),
    /// as PyTorch's `load_state_dict(strict=False)`; by default they are refused.
    #[arg(long)]
    pub non_strict: bool,
    /// Allow this pickle global in a .pth beside what tensors need (e.g. argparse.Namespace,
    /// the arguments in DINO's full checkpoints); nothing from the file is ever run. Repeatable.
    #[arg(long, value_name = "MODULE.NAME")]
    pub safe_global: Vec<String>,
}

/// The backbone a name stands for (a backbone, or a DINO preset's).
fn backbone_config(name: &str) -> Result<VitConfig, String> {
    match crate::models::find(name).map(|e| e.preset) {
        Some(Preset::Backbone(c)) => Ok(c),
        Some(Preset::Dino(d)) => Ok(d.backbone),
        None => Err(format!(
            "no backbone or DINO preset named `{name}`; choose one of {}",
            crate::models::vit_names().join(", ")
        )),
    }
}

/// Every parameter of the backbone `name` present in `w` with its shape; tensors it has no
/// place for refused (PyTorch's strict loading) unless `non_strict` (then listed and dropped).
/// Errors name the file.
fn fit(path: &Path, name: &str, w: &mut Weights, non_strict: bool) -> Result<(), String> {
    struct Shapes;
    impl crate::models::VitVisitor for Shapes {
        type Output = BTreeMap<String, Vec<usize>>;
        fn visit<V: VitModel>(self, _: &'static str) -> Self::Output {
            param_shapes::<V>()
        }
    }
    let want = crate::models::with_vit(name, Shapes).ok_or_else(|| format!("no backbone named `{name}`"))?;
    let p = path.display();
    let missing: Vec<&String> = want.keys().filter(|k| !w.contains_key(*k)).collect();
    if !missing.is_empty() {
        let some: Vec<&str> = missing.iter().take(5).map(|s| s.as_str()).collect();
        return Err(format!(
            "{p}: {} of the {} tensors of `{name}` are missing, e.g. {}",
            missing.len(),
            want.len(),
            some.join(", ")
        ));
    }
    for (k, shape) in &want {
        let got = &w[k].shape;
        if got != shape {
            return Err(format!("{p}: tensor `{k}` has shape {got:?}, `{name}` needs {shape:?}"));
        }
    }
    let extra: Vec<String> = w.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
    if !extra.is_empty() {
        let some: Vec<&str> = extra.iter().take(8).map(|s| s.as_str()).collect();
        let list = format!("{}{}", some.join(", "), if extra.len() > 8 { ", ..." } else { "" });
        if !non_strict {
            return Err(format!(
                "{p}: {} tensor(s) that `{name}` has no place for: {list}. Load anyway with --non-strict \
                 (they are dropped), or give the --model they belong to",
                extra.len()
            ));
        }
        eprintln!("note: {p}: --non-strict drops {} tensor(s) `{name}` has no place for: {list}", extra.len());
        for k in extra {
            w.remove(&k);
        }
    }
    Ok(())
}

/// Weights, their LayerNorm epsilon if not the declared one, and the model name. Weights from
/// a file are checked against the model before anything is built.
pub fn resolve(w: &WeightArgs) -> Result<(Option<Weights>, Option<f32>, String), String> {
    if let Some(path) = &w.checkpoint {
        let (f, meta) = checkpoint::load(path).map_err(|e| e.to_string())?;
        let prefix = format!("{}.backbone.", w.key);
        let mut wts: Weights =
            f.tensors.iter().filter_map(|(k, t)| k.strip_prefix(&prefix).map(|n| (n.to_string(), t.clone()))).collect();
        if wts.is_empty() {
            return Err(format!("{}: no `{prefix}*` tensors (--key teacher or student)", path.display()));
        }
        let name = w.model.clone().unwrap_or(meta.preset);
        fit(path, &name, &mut wts, w.non_strict)?;
        return Ok((Some(wts), None, name));
    }
    if let Some(path) = &w.weights {
        let b = weights::load_trusting(path, &w.key, &w.safe_global).map_err(|e| e.to_string())?;
        let file = weights::weights_file(path);
        let name = match &w.model {
            Some(m) => m.clone(),
            None => b.zoo_name(&file).map_err(|e| e.to_string())?.to_string(),
        };
        // what the source says (a Hugging Face config.json's heads) is honoured or refused
        b.check(&file, &backbone_config(&name)?).map_err(|e| e.to_string())?;
        let mut wts = b.weights();
        fit(&file, &name, &mut wts, w.non_strict)?;
        return Ok((Some(wts), b.eps.map(|e| e as f32), name));
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

/// A graph `dino compile` and `dino bench startup` can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphKind {
    /// The whole DINO training step (teacher, student, loss, backward, AdamW, EMA, center).
    TrainStep,
    /// The backbone's final [CLS] token, for `dino features` (and k-NN).
    Features,
    /// Every final token, for `dino features --patch-tokens`.
    Tokens,
    /// The last block's attention, for `dino attention`.
    Attention,
}

impl GraphKind {
    pub fn forward(self) -> Option<crate::compiled::ForwardGraph> {
        match self {
            GraphKind::TrainStep => None,
            GraphKind::Features => Some(crate::compiled::ForwardGraph::Features),
            GraphKind::Tokens => Some(crate::compiled::ForwardGraph::Tokens),
            GraphKind::Attention => Some(crate::compiled::ForwardGraph::Attention),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::features::random_backbone;
    use dino_runtime::tensors::{NamedTensor, TensorFile};

    fn args(weights: &Path, non_strict: bool) -> WeightArgs {
        WeightArgs {
            checkpoint: None,
            weights: Some(weights.to_path_buf()),
            key: "teacher".into(),
            random_init: false,
            seed: 0,
            model: None,
            non_strict,
            safe_global: vec![],
        }
    }

    fn save(path: &Path, w: &Weights) {
        let mut f = TensorFile::default();
        for (k, t) in w {
            f.insert(k.clone(), &t.shape, t.data.clone());
        }
        f.save(path).unwrap();
    }

    #[test]
    fn weight_loading_is_strict_unless_told() {
        let dir = std::env::temp_dir().join(format!("dino-strict-{}", std::process::id()));
        let mut w = random_backbone::<crate::models::FmnistSmallVit>(1);
        let clean = dir.join("clean.safetensors");
        save(&clean, &w);
        let (got, _, name) = resolve(&args(&clean, false)).unwrap();
        assert_eq!((got.unwrap().len(), name.as_str()), (w.len(), "fmnist-small"));
        // a tensor the backbone has no place for (DINOv2's LayerScale)
        w.insert("blocks.0.ls1.gamma".into(), NamedTensor { shape: vec![128], data: vec![1.0; 128] });
        let extra = dir.join("extra.safetensors");
        save(&extra, &w);
        let e = resolve(&args(&extra, false)).unwrap_err();
        assert!(
            e.contains("extra.safetensors") && e.contains("blocks.0.ls1.gamma") && e.contains("--non-strict"),
            "{e}"
        );
        let (got, _, _) = resolve(&args(&extra, true)).unwrap();
        assert!(!got.unwrap().contains_key("blocks.0.ls1.gamma"), "dropped");
        // a missing tensor and a transposed one are named with the file before anything is built
        w.remove("blocks.0.ls1.gamma");
        let mut t = w.clone();
        t.remove("blocks.5.mlp.fc2.bias");
        let missing = dir.join("missing.safetensors");
        save(&missing, &t);
        let e = resolve(&WeightArgs { model: Some("fmnist-small".into()), ..args(&missing, true) }).unwrap_err();
        assert!(e.contains("missing.safetensors") && e.contains("blocks.5.mlp.fc2.bias"), "{e}");
        let mut t = w.clone();
        t.get_mut("blocks.0.mlp.fc2.weight").unwrap().shape.reverse();
        let turned = dir.join("transposed.safetensors");
        save(&turned, &t);
        let e = resolve(&args(&turned, false)).unwrap_err();
        assert!(e.contains("transposed.safetensors") && e.contains("blocks.0.mlp.fc2.weight"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }
}
