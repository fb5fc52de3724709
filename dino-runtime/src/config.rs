//! Declarations as data: what `vit!` and `dino!` record, printed by the CLI and saved beside
//! checkpoints.
use serde::Serialize;

use crate::error::{Error, Result};

mod ibot;
mod optimizer;
pub use crate::optim::{ClipScope, FreezeRule};
pub use ibot::IbotConfig;
pub use optimizer::{LrScaling, OptimizerConfig, OptimizerName};

/// A ViT backbone (`vit!`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VitConfig {
    pub name: &'static str,
    /// The declaration's doc comment.
    pub doc: &'static str,
    pub image: usize,
    pub patch: usize,
    pub channels: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// MLP hidden width: `fc2`'s input (SwiGLU: the gated width, half of `w12`'s output).
    pub mlp: usize,
    /// The blocks' feed-forward layer.
    pub ffn: Ffn,
    /// How the position embeddings are resized for crops of other sizes.
    pub interpolation: Interpolation,
    pub qkv_bias: bool,
    pub norm_eps: f64,
    pub drop_path: f64,
    /// LayerScale's initial `gamma` on both residual branches of every block; none: no
    /// LayerScale (DINO), `Some(1e-5)`: DINOv2's blocks.
    pub layer_scale: Option<f64>,
    /// Register tokens between [CLS] and the patches (DINOv2 with registers: 4); they get no
    /// position embedding and are left out of features and attention maps.
    pub registers: usize,
}

/// How the teacher's outputs become the targets of the DINO loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Centering {
    /// DINO's: `softmax((t - c) / teacher_temp)` with `c` the running mean of the teacher's
    /// outputs (`center_momentum`).
    #[default]
    Ema,
    /// DINOv2's `sinkhorn_knopp_teacher`: `exp(t / teacher_temp)` normalized alternately over
    /// the prototypes and over the global batch's images, `iterations` times (3 in DINOv2).
    SinkhornKnopp { iterations: usize },
}

/// The feed-forward layer of every block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ffn {
    /// `fc2(gelu(fc1(x)))`: DINO's and timm's `Mlp`.
    #[default]
    Gelu,
    /// `w3(silu(x1) * x2)` with `[x1, x2] = w12(x)` split in halves: DINOv2's
    /// `SwiGLUFFNFused` (timm's `SwiGLUPacked`, whose `fc1`/`fc2` are `w12`/`w3`).
    SwiGlu,
}

impl Ffn {
    /// The first linear layer's output width for hidden width `hidden` (SwiGLU packs both
    /// halves into one).
    pub const fn packed(self, hidden: usize) -> usize {
        match self {
            Ffn::Gelu => hidden,
            Ffn::SwiGlu => 2 * hidden,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Ffn::Gelu => "gelu",
            Ffn::SwiGlu => "swiglu",
        }
    }
}

/// How position embeddings are resized for another patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// DINO's (and DINOv2's models without registers): bicubic with scale `(g + 0.1) / g0`.
    #[default]
    Bicubic,
    /// DINOv2's models with registers: antialiased bicubic to the exact grid.
    Antialiased,
}

impl Interpolation {
    pub const fn name(self) -> &'static str {
        match self {
            Interpolation::Bicubic => "bicubic",
            Interpolation::Antialiased => "antialiased",
        }
    }
}

impl std::fmt::Display for Ffn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl VitConfig {
    /// Patches per side at the native size.
    pub const fn grid(&self) -> usize {
        self.image / self.patch
    }

    /// Position embeddings: [CLS] and the patches at the native size.
    pub const fn positions(&self) -> usize {
        1 + self.grid() * self.grid()
    }

    /// Tokens the blocks see at the native size: [CLS], the registers and the patches.
    pub const fn tokens(&self) -> usize {
        self.positions() + self.registers
    }

    /// Parameters of the backbone (as DINO counts them: no head).
    pub const fn num_params(&self) -> usize {
        let (d, f) = (self.dim, self.mlp);
        let f1 = self.ffn.packed(f);
        let qkv_bias = if self.qkv_bias { 3 * d } else { 0 };
        let layer_scale = if self.layer_scale.is_some() { 2 * d } else { 0 };
        let block = 2 * d + (3 * d * d + qkv_bias) + (d * d + d) + 2 * d + (d * f1 + f1) + (f * d + d) + layer_scale;
        let embed = d * self.channels * self.patch * self.patch + d + d + (self.positions() + self.registers) * d;
        embed + self.depth * block + 2 * d
    }

    /// A lower bound of the bytes the activations of `images` images of `size` x `size` px
    /// take (f32): a forward pass holds at least one block's attention matrices (every head's
    /// `t x t`), MLP hidden rows and two residual streams at once; training keeps every
    /// block's for the backward pass. In u128: absurd requests are measured, never
    /// overflowed. Measured against the planned arenas, it stays below them (fmnist-small's
    /// step: 0.26 GB estimated, 0.51 GB planned; DINO ViT-S/16's: 7.3 GB, 14.7 GB).
    pub fn activation_bytes(&self, size: usize, images: usize, training: bool) -> u128 {
        let g = (size / self.patch.max(1)) as u128;
        let t = g * g + 1 + self.registers as u128;
        let (d, m, h) = (self.dim as u128, self.mlp as u128, self.heads as u128);
        let block = h.saturating_mul(t).saturating_mul(t).saturating_add(t.saturating_mul(m + 2 * d));
        let input = (size as u128).pow(2).saturating_mul(self.channels as u128);
        let kept = if training { block.saturating_mul(self.depth as u128) } else { block };
        (4 * images as u128).saturating_mul(input.saturating_add(kept))
    }
}

/// DINO's projection head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeadConfig {
    pub hidden: usize,
    pub bottleneck: usize,
    /// Prototypes K.
    pub out: usize,
    pub layers: usize,
    pub norm_last_layer: bool,
}

impl HeadConfig {
    /// Parameters of the head on a backbone of width `dim` (weight_g included).
    pub const fn num_params(&self, dim: usize) -> usize {
        let (h, b) = (self.hidden, self.bottleneck);
        (dim * h + h) + (self.layers - 2) * (h * h + h) + (h * b + b) + self.out * b + self.out
    }
}

/// One group of crops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CropConfig {
    pub count: usize,
    pub size: usize,
    /// Area fraction range of RandomResizedCrop.
    pub scale: (f64, f64),
}

/// The augmentations of the views.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AugmentConfig {
    pub flip: f64,
    /// Brightness, contrast, saturation, hue, probability.
    pub color_jitter: Option<([f64; 4], f64)>,
    pub grayscale: f64,
    /// Sigma range, probabilities (global 1, global 2, locals), kernel size (0: from sigma).
    pub blur: Option<((f64, f64), [f64; 3], usize)>,
    /// Threshold in [0, 1] and probability, global view 2 only.
    pub solarize: Option<(f64, f64)>,
    pub mean: PerChannel,
    pub std: PerChannel,
}

/// Most channels a normalization holds values for (RGBA).
pub const MAX_CHANNELS: usize = 4;

/// Per-channel values of a normalization (mean or std), owned and `Copy`: a declaration's
/// constant and a normalization chosen at run time are the same type. Reads as a `[f64]`.
#[derive(Clone, Copy, PartialEq)]
pub struct PerChannel {
    vals: [f64; MAX_CHANNELS],
    len: usize,
}

impl PerChannel {
    /// The values of `v` (at most [`MAX_CHANNELS`]; `dino!` checks it at compile time).
    pub const fn new(v: &[f64]) -> PerChannel {
        assert!(v.len() <= MAX_CHANNELS, "a normalization holds at most 4 channels");
        let mut vals = [0.0; MAX_CHANNELS];
        let mut i = 0;
        while i < v.len() {
            vals[i] = v[i];
            i += 1;
        }
        PerChannel { vals, len: v.len() }
    }

    /// The values of `v`, or an error naming `what` when there are too many.
    pub fn from_slice(what: &str, v: &[f64]) -> crate::Result<PerChannel> {
        if v.len() > MAX_CHANNELS {
            return Err(crate::Error::Config {
                what: what.into(),
                why: format!("{} values; a normalization holds at most {MAX_CHANNELS} channels", v.len()),
            });
        }
        Ok(PerChannel::new(v))
    }
}

impl std::ops::Deref for PerChannel {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        &self.vals[..self.len]
    }
}

impl std::fmt::Debug for PerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for PerChannel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<const N: usize> PartialEq<&[f64; N]> for PerChannel {
    fn eq(&self, other: &&[f64; N]) -> bool {
        **self == other[..]
    }
}

impl AugmentConfig {
    /// Random horizontal flips and normalization only (supervised training, tests).
    pub const fn flip_only(mean: PerChannel, std: PerChannel) -> AugmentConfig {
        AugmentConfig { flip: 0.5, color_jitter: None, grayscale: 0.0, blur: None, solarize: None, mean, std }
    }
}

/// A DINO objective (`dino!`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DinoConfig {
    pub name: &'static str,
    pub doc: &'static str,
    pub backbone: VitConfig,
    pub head: HeadConfig,
    pub global: CropConfig,
    pub local: Option<CropConfig>,
    pub student_temp: f64,
    /// Start, end, linear warmup in epochs.
    pub teacher_temp: (f64, f64, f64),
    pub center_momentum: f64,
    /// Start and end of the cosine (per iteration) schedule.
    pub teacher_momentum: (f64, f64),
    pub optimizer: OptimizerConfig,
    /// 0: no clipping.
    pub clip_grad: f64,
    /// What `clip_grad` bounds: each parameter's gradient norm (DINO) or each module's (DINOv2).
    pub clip_scope: ClipScope,
    /// DINOv2's KoLeo regularizer on the student's global-crop [CLS] features, this weight
    /// times the loss of each global view (0: none).
    pub koleo: f64,
    /// How the teacher's outputs are centered before the loss (iBOT's patch targets too).
    pub centering: Centering,
    /// iBOT's masked-patch loss (DINOv2), when declared.
    pub ibot: Option<IbotConfig>,
    pub freeze_last_layer: usize,
    /// How the last layer is frozen: no update (DINO) or lr 0 (DINOv2).
    pub freeze_rule: FreezeRule,
    pub epochs: usize,
    pub batch_size: usize,
    pub augment: AugmentConfig,
}

impl DinoConfig {
    /// Student (= teacher) parameters: backbone, head, and with iBOT the mask token and a
    /// separate head.
    pub const fn num_params(&self) -> usize {
        let head = self.head.num_params(self.backbone.dim);
        let ibot = match self.ibot {
            Some(i) => self.backbone.dim + if i.separate_head { head } else { 0 },
            None => 0,
        };
        self.backbone.num_params() + head + ibot
    }

    /// A lower bound of the bytes one training step of `batch` images takes: the student's
    /// activations over every crop (kept for the backward pass), the teacher's over the global
    /// crops, the head's outputs, and the parameters with their gradients and optimizer state.
    pub fn step_bytes(&self, batch: usize) -> u128 {
        let b = &self.backbone;
        let n = self.global.count as u128;
        let global =
            n.saturating_mul(b.activation_bytes(self.global.size, batch, true).saturating_add(b.activation_bytes(
                self.global.size,
                batch,
                false,
            )));
        let locals = self.local.map_or(0, |l| l.count as u128);
        let local = self.local.map_or(0, |l| locals.saturating_mul(b.activation_bytes(l.size, batch, true)));
        let rows = (n + locals).saturating_mul(batch as u128);
        let head = rows.saturating_mul(4 * (self.head.hidden + self.head.out) as u128);
        let params = 4 * 5 * self.num_params() as u128; // student, gradient, two moments, teacher
        global.saturating_add(local).saturating_add(head).saturating_add(params)
    }

    /// The bytes of the per-iteration schedules of `iterations` iterations (learning rate,
    /// weight decay, teacher momentum: f64 each).
    pub fn schedule_bytes(iterations: u128) -> u128 {
        iterations.saturating_mul(3 * 8)
    }

    /// The one run-time check of an objective, whatever changed it (flags, a loaded run):
    /// what the compiled model `declared` cannot honour (crop sizes, local crops), and every
    /// value out of its range, named with its config key and its flag.
    pub fn validate(&self, declared: &DinoConfig) -> Result<()> {
        let cfg = self;
        let bad = |what: &str, why: String| Err(Error::Config { what: what.into(), why });
        if cfg.global.size != declared.global.size || cfg.global.count != 2 {
            return bad(
                "global crops",
                format!("the model is built for 2 global crops of {} px", declared.global.size),
            );
        }
        match (cfg.local, declared.local) {
            (Some(l), Some(d)) if l.size != d.size => {
                return bad(
                    "local crops",
                    format!("the model is built for local crops of {} px, not {}", d.size, l.size),
                )
            }
            (Some(l), None) if l.count > 0 => {
                return bad("local crops", format!("`{}` declares no local crops", declared.name))
            }
            _ => {}
        }
        for (what, c) in
            std::iter::once(("global crop scale", cfg.global)).chain(cfg.local.map(|l| ("local crop scale", l)))
        {
            let (lo, hi) = c.scale;
            if !(0.0 < lo && lo <= hi && hi <= 1.0) {
                return bad(what, format!("({lo}, {hi}) must satisfy 0 < min <= max <= 1"));
            }
        }
        let positive = [
            ("student temperature", cfg.student_temp),
            ("teacher temperature", cfg.teacher_temp.0),
            ("teacher temperature", cfg.teacher_temp.1),
        ];
        for (what, v) in positive {
            if !(v > 0.0) {
                return bad(what, format!("{v} must be > 0"));
            }
        }
        let unit = [
            ("center momentum", cfg.center_momentum),
            ("teacher momentum", cfg.teacher_momentum.0),
            ("teacher momentum", cfg.teacher_momentum.1),
            ("drop path rate", cfg.backbone.drop_path),
        ];
        for (what, v) in unit {
            if !(0.0..=1.0).contains(&v) || (what == "drop path rate" && v >= 1.0) {
                return bad(what, format!("{v} is outside [0, 1{}", if what == "drop path rate" { ")" } else { "]" }));
            }
        }
        if let Centering::SinkhornKnopp { iterations } = cfg.centering {
            if !(1..=100).contains(&iterations) {
                return bad(
                    "Sinkhorn-Knopp iterations (--sinkhorn-knopp)",
                    format!("{iterations} is outside 1..=100 (DINOv2 runs 3)"),
                );
            }
        }
        if !(0.0..=1.0).contains(&cfg.koleo) {
            return bad("KoLeo weight (--koleo)", format!("{} is outside [0, 1]", cfg.koleo));
        }
        match (cfg.ibot, declared.ibot) {
            (Some(i), Some(_)) => i.validate()?,
            (None, None) => {}
            (Some(_), None) => {
                return bad(
                    "ibot",
                    format!("`{}` declares no iBOT loss (its networks have no mask token)", declared.name),
                )
            }
            (None, Some(_)) => {
                return bad(
                    "ibot",
                    format!("`{}` is built with iBOT (set its weight to 0 to switch it off)", declared.name),
                )
            }
        }
        if !(cfg.clip_grad >= 0.0 && cfg.clip_grad.is_finite()) {
            return bad("clip_grad", format!("{} must be finite and >= 0 (0 disables clipping)", cfg.clip_grad));
        }
        let o = &cfg.optimizer;
        if !(o.layer_decay > 0.0 && o.layer_decay <= 1.0) {
            return bad(
                "layer-wise lr decay (--layer-decay)",
                format!("{} is outside (0, 1] (1 is off)", o.layer_decay),
            );
        }
        if !(o.patch_embed_lr > 0.0 && o.patch_embed_lr <= 1.0) {
            return bad(
                "patch-embedding lr multiplier (--patch-embed-lr)",
                format!("{} is outside (0, 1] (1 is off)", o.patch_embed_lr),
            );
        }
        if cfg.epochs == 0 {
            return bad("epochs (--epochs)", "must be at least 1".into());
        }
        if cfg.batch_size == 0 {
            return bad("batch_size (--batch-size)", "must be at least 1".into());
        }
        let warm = cfg.teacher_temp.2;
        if warm > cfg.epochs as f64 {
            return bad(
                "teacher temperature warmup (--warmup-teacher-temp-epochs)",
                format!(
                    "{warm} epochs is longer than the training ({} epochs, --epochs): the temperature would never \
                     reach {}; give a warmup of at most {} epochs",
                    cfg.epochs, cfg.teacher_temp.1, cfg.epochs
                ),
            );
        }
        if !(o.lr >= 0.0 && o.min_lr >= 0.0 && o.warmup_epochs >= 0.0) || !(o.lr.is_finite() && o.min_lr.is_finite()) {
            return bad(
                "learning-rate schedule (--lr, --min-lr, --warmup-epochs)",
                format!("lr {}, min-lr {} and warmup {} must be finite and >= 0", o.lr, o.min_lr, o.warmup_epochs),
            );
        }
        Ok(())
    }

    /// The peak learning rate for a total batch size (scaled as declared when `lr_per` is set).
    pub fn peak_lr(&self, batch: usize) -> f64 {
        let o = &self.optimizer;
        match (o.lr_per, o.lr_scaling) {
            (Some(per), LrScaling::Linear) => o.lr * batch as f64 / per as f64,
            (Some(per), LrScaling::Sqrt) => o.lr * (batch as f64 / per as f64).sqrt(),
            (None, _) => o.lr,
        }
    }

    /// Each student parameter's constant lr multiplier by its name (DINOv2's layer-wise decay
    /// and patch-embedding multiplier; 1 without them).
    pub fn lr_multiplier(&self, name: &str) -> f64 {
        let o = &self.optimizer;
        crate::dino::param_groups::lr_multiplier(name, self.backbone.depth, o.layer_decay, o.patch_embed_lr)
    }
}
