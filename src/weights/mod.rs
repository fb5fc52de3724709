//! Backbone weights from the formats DINO's models are distributed in: timm-named safetensors
//! (the official state-dict names), Hugging Face `facebook/dino-*` safetensors (separate
//! query/key/value, `layernorm_before/after`; epsilon and heads from the `config.json` beside
//! the file), the official `.pth` files (backbone-only state dicts, and full training
//! checkpoints with `student`/`teacher` and `module.`/`backbone.` prefixes), and this project's
//! own checkpoints. DINOv2's forms too: official (`register_tokens`, `ls1.gamma`, SwiGLU's
//! `mlp.w12`/`mlp.w3`), timm's (`reg_token` without a [CLS] position, SwiGLU as `fc1`/`fc2`)
//! and Hugging Face's `facebook/dinov2-*` (`layer_scale1.lambda1`, `mlp.weights_in/out`).
//! Everything becomes the official names (`cls_token`, `blocks.0.attn.qkv.weight`).
pub mod pickle;
pub mod pth;

use std::collections::BTreeMap;
use std::path::Path;

use dino_runtime::config::{Ffn, VitConfig};
use dino_runtime::tensors::{NamedTensor, TensorFile};
use dino_runtime::{Error, Result};

use crate::eval::Weights;

/// Backbone tensors in official names, and what the source said about the architecture.
#[derive(Debug, Clone, Default)]
pub struct Backbone {
    pub tensors: BTreeMap<String, NamedTensor>,
    /// Which format the file was in.
    pub format: &'static str,
    /// LayerNorm epsilon, when the source says (Hugging Face's config.json).
    pub eps: Option<f64>,
    /// Attention heads, when the source says.
    pub heads: Option<usize>,
}

/// The architecture the shapes imply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inferred {
    pub dim: usize,
    pub depth: usize,
    pub patch: usize,
    pub channels: usize,
    /// Native image size (from the position embeddings).
    pub image: usize,
    pub mlp: usize,
    pub qkv_bias: bool,
    /// LayerScale on the residual branches (`blocks.N.ls1.gamma`, DINOv2's blocks).
    pub layer_scale: bool,
    /// Register tokens (`register_tokens (1, R, D)`).
    pub registers: usize,
    /// The feed-forward layer: SwiGLU where the blocks hold `mlp.w12`/`mlp.w3`.
    pub ffn: Ffn,
}

fn bad(path: &Path, why: String) -> Error {
    Error::Format { path: path.to_path_buf(), why }
}

/// Strip the wrappers training code puts around a backbone's names.
fn strip(name: &str) -> &str {
    let mut n = name;
    loop {
        let before = n;
        for p in ["module.", "backbone.", "vit.", "model."] {
            n = n.strip_prefix(p).unwrap_or(n);
        }
        if n == before {
            return n;
        }
    }
}

/// Is this name part of the backbone (not a DINO or classification head)?
fn is_backbone(name: &str) -> bool {
    !(name.starts_with("head.")
        || name.starts_with("head_")
        || name == "head"
        || name.starts_with("fc_norm")
        || name.starts_with("pooler.")
        || name == "mask_token")
}

/// timm's form of DINOv2 with registers to the official one: timm's `reg_token` is
/// `register_tokens`, and timm keeps no position for [CLS] (`no_embed_class`: its `pos_embed`
/// has the patches' rows only, [CLS]'s folded into `cls_token`), which is an official
/// `pos_embed` whose [CLS] row is zero. Other tensors pass unchanged.
fn official_registers(path: &Path, mut t: BTreeMap<String, NamedTensor>) -> Result<BTreeMap<String, NamedTensor>> {
    let Some(reg) = t.remove("reg_token") else { return Ok(t) };
    t.insert("register_tokens".into(), reg);
    if let Some(pos) = t.get_mut("pos_embed") {
        let (n, d) = match pos.shape[..] {
            [1, n, d] => (n, d),
            ref s => return Err(bad(path, format!("`pos_embed` has shape {s:?}, expected (1, positions, dim)"))),
        };
        let g = (n as f64).sqrt().round() as usize;
        if g * g == n {
            let mut data = vec![0.0; d];
            data.extend_from_slice(&pos.data);
            *pos = NamedTensor { shape: vec![1, n + 1, d], data };
        }
    }
    Ok(t)
}

/// timm's form of a SwiGLU block to the official one: timm's `SwiGLUPacked` names DINOv2's
/// `w12`/`w3` `fc1`/`fc2`, and shows itself by its shapes: `fc2` reads half the width `fc1`
/// writes (a GELU MLP's `fc2` reads all of it). Other tensors pass unchanged.
fn official_swiglu(mut t: BTreeMap<String, NamedTensor>) -> BTreeMap<String, NamedTensor> {
    for i in 0.. {
        let (fc1, fc2) = (format!("blocks.{i}.mlp.fc1"), format!("blocks.{i}.mlp.fc2"));
        let (Some(a), Some(b)) = (t.get(&format!("{fc1}.weight")), t.get(&format!("{fc2}.weight"))) else { break };
        let packed = matches!((&a.shape[..], &b.shape[..]), ([f, _], [_, g]) if *f == 2 * *g);
        if !packed {
            continue;
        }
        for (from, to) in [(fc1, "w12"), (fc2, "w3")] {
            for part in ["weight", "bias"] {
                if let Some(v) = t.remove(&format!("{from}.{part}")) {
                    t.insert(format!("blocks.{i}.mlp.{to}.{part}"), v);
                }
            }
        }
    }
    t
}

/// Hugging Face ViT and DINOv2 names to the official ones; q, k and v are concatenated
/// afterwards.
fn from_hf(name: &str) -> Option<String> {
    let n = name.strip_prefix("vit.").unwrap_or(name);
    let fixed = [
        ("embeddings.cls_token", "cls_token"),
        ("embeddings.position_embeddings", "pos_embed"),
        ("embeddings.register_tokens", "register_tokens"),
        ("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"),
        ("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
        ("layernorm.weight", "norm.weight"),
        ("layernorm.bias", "norm.bias"),
    ];
    if let Some((_, o)) = fixed.iter().find(|(h, _)| *h == n) {
        return Some(o.to_string());
    }
    let rest = n.strip_prefix("encoder.layer.")?;
    let (i, tail) = rest.split_once('.')?;
    let mapped = match tail {
        t if t.starts_with("layernorm_before.") => t.replacen("layernorm_before.", "norm1.", 1),
        t if t.starts_with("layernorm_after.") => t.replacen("layernorm_after.", "norm2.", 1),
        t if t.starts_with("attention.attention.") => t.replacen("attention.attention.", "attn.", 1), // q/k/v
        t if t.starts_with("attention.output.dense.") => t.replacen("attention.output.dense.", "attn.proj.", 1),
        t if t.starts_with("intermediate.dense.") => t.replacen("intermediate.dense.", "mlp.fc1.", 1),
        t if t.starts_with("output.dense.") => t.replacen("output.dense.", "mlp.fc2.", 1),
        // DINOv2 (`Dinov2Layer`)
        t if t.starts_with("norm1.") || t.starts_with("norm2.") || t.starts_with("mlp.fc") => t.to_string(),
        "layer_scale1.lambda1" => "ls1.gamma".into(),
        "layer_scale2.lambda1" => "ls2.gamma".into(),
        t if t.starts_with("mlp.weights_in.") => t.replacen("mlp.weights_in.", "mlp.w12.", 1),
        t if t.starts_with("mlp.weights_out.") => t.replacen("mlp.weights_out.", "mlp.w3.", 1),
        _ => return None,
    };
    Some(format!("blocks.{i}.{mapped}"))
}

fn hf_to_official(path: &Path, t: BTreeMap<String, NamedTensor>) -> Result<BTreeMap<String, NamedTensor>> {
    let mut out = BTreeMap::new();
    let mut qkv: BTreeMap<String, [Option<NamedTensor>; 3]> = BTreeMap::new();
    for (k, v) in t {
        let Some(name) = from_hf(&k) else { continue };
        let part = ["query", "key", "value"].iter().position(|p| name.contains(&format!(".attn.{p}.")));
        match part {
            Some(i) => {
                let kind = if name.ends_with(".bias") { "bias" } else { "weight" };
                let block = name.split(".attn.").next().unwrap_or_default().to_string();
                qkv.entry(format!("{block}.attn.qkv.{kind}")).or_default()[i] = Some(v);
            }
            None => {
                out.insert(name, v);
            }
        }
    }
    for (name, parts) in qkv {
        let [Some(q), Some(k), Some(v)] = parts else {
            return Err(bad(path, format!("`{name}`: the query, key and value tensors are not all there")));
        };
        let mut shape = q.shape.clone();
        shape[0] *= 3;
        let data = [q.data, k.data, v.data].concat();
        out.insert(name, NamedTensor { shape, data });
    }
    Ok(out)
}

/// The `config.json` of a Hugging Face model beside `path`, if any (an unreadable one is an
/// error naming it: what it says is honoured or refused, never ignored).
fn hf_config(path: &Path) -> Result<Option<serde_json::Value>> {
    let Some(dir) = path.parent() else { return Ok(None) };
    let cfg = dir.join("config.json");
    let text = match std::fs::read_to_string(&cfg) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path: cfg, source }),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| bad(&cfg, format!("not JSON: {e}")))
}

/// What a Hugging Face config.json says must be what the tensors are.
fn check_hf_config(path: &Path, v: &serde_json::Value, b: &Backbone) -> Result<()> {
    let cfg = path.parent().unwrap_or(Path::new(".")).join("config.json");
    let i = b.infer(path)?;
    for (key, got) in [
        ("hidden_size", i.dim),
        ("num_hidden_layers", i.depth),
        ("patch_size", i.patch),
        ("num_channels", i.channels),
        ("image_size", i.image),
        ("intermediate_size", i.mlp),
    ] {
        if let Some(said) = v[key].as_u64() {
            if said as usize != got {
                return Err(bad(&cfg, format!("says {key} {said}, but the tensors of {} have {got}", path.display())));
            }
        }
    }
    // DINOv2's
    if let Some(said) = v["num_register_tokens"].as_u64() {
        if said as usize != i.registers {
            let got = i.registers;
            return Err(bad(
                &cfg,
                format!("says {said} register tokens, but the tensors of {} have {got}", path.display()),
            ));
        }
    }
    if let Some(said) = v["use_swiglu_ffn"].as_bool() {
        if said != (i.ffn == Ffn::SwiGlu) {
            let got = i.ffn;
            return Err(bad(
                &cfg,
                format!("says use_swiglu_ffn {said}, but the tensors of {} have a {got} MLP", path.display()),
            ));
        }
    }
    if let Some(h) = b.heads {
        if h == 0 || i.dim % h != 0 {
            return Err(bad(&cfg, format!("says {h} attention heads, which do not divide the width {}", i.dim)));
        }
    }
    Ok(())
}

/// The weight files a Hugging Face model directory holds, in the order they are looked for.
const HF_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// The file to read for `path`: itself, or the weights of a Hugging Face model directory.
pub fn weights_file(path: &Path) -> std::path::PathBuf {
    if path.is_dir() {
        if let Some(f) = HF_FILES.iter().map(|f| path.join(f)).find(|f| f.is_file()) {
            return f;
        }
    }
    path.to_path_buf()
}

/// Read backbone weights from `path` (format from the content). `key` picks the network of a
/// training checkpoint (`teacher`, DINO's choice for evaluation, or `student`).
pub fn load(path: &Path, key: &str) -> Result<Backbone> {
    load_trusting(path, key, &[])
}

/// [`load`], allowing the pickle globals in `trusted` (`argparse.Namespace`: the arguments in
/// DINO's full checkpoints) beside the ones tensors need.
pub fn load_trusting(path: &Path, key: &str, trusted: &[String]) -> Result<Backbone> {
    let path = &weights_file(path);
    if path.is_dir() {
        return Err(bad(path, format!("a directory without {}: give the weights file itself", HF_FILES.join(" or "))));
    }
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    if bytes.starts_with(b"PK") {
        let tensors = pth::load_state_dict(path, &bytes, key, trusted)?;
        let t = tensors.into_iter().map(|(k, v)| (strip(&k).to_string(), v)).filter(|(k, _)| is_backbone(k)).collect();
        let t = official_swiglu(official_registers(path, t)?);
        return Ok(Backbone { tensors: t, format: "PyTorch .pth", ..Default::default() });
    }
    let f = TensorFile::from_bytes(&bytes, path)?;
    if f.metadata.contains_key("dino") {
        let (f, _) = crate::train::checkpoint::checked(f, path)?;
        let prefix = format!("{key}.backbone.");
        let t: BTreeMap<_, _> =
            f.tensors.into_iter().filter_map(|(k, v)| k.strip_prefix(&prefix).map(|n| (n.to_string(), v))).collect();
        if t.is_empty() {
            return Err(bad(path, format!("no `{prefix}*` tensors in this checkpoint (key `{key}`)")));
        }
        return Ok(Backbone { tensors: t, format: "dino checkpoint", ..Default::default() });
    }
    let hf = f.tensors.keys().any(|k| k.contains("encoder.layer.") || k.starts_with("embeddings."));
    if hf {
        let config = hf_config(path)?;
        let t = hf_to_official(path, f.tensors)?;
        let eps = config.as_ref().and_then(|v| v["layer_norm_eps"].as_f64());
        let heads = config.as_ref().and_then(|v| v["num_attention_heads"].as_u64()).map(|h| h as usize);
        let b = Backbone { tensors: t, format: "Hugging Face safetensors", eps, heads };
        if let Some(v) = &config {
            check_hf_config(path, v, &b)?;
        }
        return Ok(b);
    }
    let t = f.tensors.into_iter().map(|(k, v)| (strip(&k).to_string(), v)).filter(|(k, _)| is_backbone(k)).collect();
    let t = official_swiglu(official_registers(path, t)?);
    Ok(Backbone { tensors: t, format: "timm safetensors", ..Default::default() })
}

impl Backbone {
    fn shape(&self, path: &Path, name: &str) -> Result<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice()).ok_or_else(|| {
            bad(
                path,
                format!(
                    "no `{name}` tensor: not a ViT backbone ({} tensors, e.g. {:?})",
                    self.tensors.len(),
                    self.tensors.keys().take(3).collect::<Vec<_>>()
                ),
            )
        })
    }

    /// The architecture from the tensor shapes (heads excepted: they do not show in shapes).
    pub fn infer(&self, path: &Path) -> Result<Inferred> {
        let dim = *self.shape(path, "cls_token")?.last().unwrap_or(&0);
        let pw = self.shape(path, "patch_embed.proj.weight")?.to_vec();
        if pw.len() != 4 {
            return Err(bad(path, format!("`patch_embed.proj.weight` has shape {pw:?}, expected (dim, C, P, P)")));
        }
        let n0 = self.shape(path, "pos_embed")?.get(1).copied().unwrap_or(0);
        let g = ((n0.saturating_sub(1)) as f64).sqrt().round() as usize;
        if g * g + 1 != n0 {
            return Err(bad(path, format!("`pos_embed` has {n0} positions, not 1 + a square grid")));
        }
        let depth = (0..).take_while(|i| self.tensors.contains_key(&format!("blocks.{i}.norm1.weight"))).count();
        let (ffn, mlp) = if self.tensors.contains_key("blocks.0.mlp.w12.weight") {
            (Ffn::SwiGlu, self.shape(path, "blocks.0.mlp.w3.weight")?.get(1).copied().unwrap_or(0))
        } else {
            (Ffn::Gelu, self.shape(path, "blocks.0.mlp.fc1.weight")?[0])
        };
        Ok(Inferred {
            dim,
            depth,
            patch: pw[3],
            channels: pw[1],
            image: g * pw[3],
            mlp,
            qkv_bias: self.tensors.contains_key("blocks.0.attn.qkv.bias"),
            layer_scale: self.tensors.contains_key("blocks.0.ls1.gamma"),
            registers: self.tensors.get("register_tokens").and_then(|r| r.shape.get(1).copied()).unwrap_or(0),
            ffn,
        })
    }

    /// Check that these weights fit a declared backbone; the error names the first difference.
    pub fn check(&self, path: &Path, cfg: &VitConfig) -> Result<()> {
        let i = self.infer(path)?;
        let diffs = [
            ("width", i.dim, cfg.dim),
            ("depth", i.depth, cfg.depth),
            ("patch", i.patch, cfg.patch),
            ("channels", i.channels, cfg.channels),
            ("image size", i.image, cfg.image),
            ("MLP width", i.mlp, cfg.mlp),
            ("qkv bias", i.qkv_bias as usize, cfg.qkv_bias as usize),
        ];
        if let Some((what, got, want)) = diffs.iter().find(|d| d.1 != d.2) {
            return Err(bad(path, format!("these weights have {what} {got}, `{}` has {want}", cfg.name)));
        }
        if i.ffn != cfg.ffn {
            return Err(bad(path, format!("these weights have a {} MLP, `{}` has {}", i.ffn, cfg.name, cfg.ffn)));
        }
        // what the declaration has and the weights lack; tensors the declaration has no place
        // for (LayerScale, registers of a backbone declared without) are the strict loader's
        // to name, and `--non-strict`'s to drop
        if cfg.layer_scale.is_some() && !i.layer_scale {
            return Err(bad(
                path,
                format!("these weights have no LayerScale (`blocks.N.ls1.gamma`), `{}` has", cfg.name),
            ));
        }
        if cfg.registers > 0 && i.registers != cfg.registers {
            let (got, want) = (i.registers, cfg.registers);
            return Err(bad(path, format!("these weights have {got} register tokens, `{}` has {want}", cfg.name)));
        }
        if let Some(h) = self.heads {
            if h != cfg.heads {
                return Err(bad(path, format!("these weights have {h} heads, `{}` has {}", cfg.name, cfg.heads)));
            }
        }
        Ok(())
    }

    /// The name of the zoo backbone these weights fit (by width, depth and patch), with the
    /// heads DINO uses for that width.
    pub fn zoo_name(&self, path: &Path) -> Result<&'static str> {
        let i = self.infer(path)?;
        Ok(match (i.dim, i.depth, i.patch, i.image) {
            (192, 12, 16, 224) => "vit-tiny-16",
            (192, 12, 8, 224) => "vit-tiny-8",
            (384, 12, 16, 224) => "vit-small-16",
            (384, 12, 8, 224) => "vit-small-8",
            (768, 12, 16, 224) => "vit-base-16",
            (768, 12, 8, 224) => "vit-base-8",
            (128, 6, 4, 28) => "fmnist-small",
            (192, 12, 4, 28) => "fmnist-tiny",
            _ => {
                return Err(bad(
                    path,
                    format!(
                        "no zoo backbone has width {}, depth {}, patch {} at {} px: give --model",
                        i.dim, i.depth, i.patch, i.image
                    ),
                ))
            }
        })
    }

    pub fn weights(&self) -> Weights {
        self.tensors.clone()
    }
}
