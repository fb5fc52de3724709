//! Declarations as data: what `vit!` and `dino!` record, printed by the CLI and saved beside
//! checkpoints.
use serde::Serialize;

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
    /// MLP width.
    pub mlp: usize,
    pub qkv_bias: bool,
    pub norm_eps: f64,
    pub drop_path: f64,
}

impl VitConfig {
    /// Patches per side at the native size.
    pub const fn grid(&self) -> usize {
        self.image / self.patch
    }

    /// Tokens at the native size ([CLS] and patches).
    pub const fn tokens(&self) -> usize {
        1 + self.grid() * self.grid()
    }

    /// Parameters of the backbone (as DINO counts them: no head).
    pub const fn num_params(&self) -> usize {
        let (d, f) = (self.dim, self.mlp);
        let qkv_bias = if self.qkv_bias { 3 * d } else { 0 };
        let block = 2 * d + (3 * d * d + qkv_bias) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d);
        let embed = d * self.channels * self.patch * self.patch + d + d + self.tokens() * d;
        embed + self.depth * block + 2 * d
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

/// The optimizers a `dino!` declaration can name (`optimizer: adamw { .. }`), written as
/// `"adamw"` / `"sgd"` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    AdamW,
    Sgd,
}

impl OptimizerName {
    /// The runtime optimizer (`momentum` is SGD's; AdamW uses DINO's betas and epsilon).
    pub fn build(self, momentum: f64) -> crate::optim::OptimizerKind {
        use crate::optim::{AdamWConfig, OptimizerKind, SgdConfig};
        match self {
            OptimizerName::AdamW => OptimizerKind::AdamW(AdamWConfig::default()),
            OptimizerName::Sgd => OptimizerKind::Sgd(SgdConfig { momentum: momentum as f32 }),
        }
    }
}

/// The optimizer and its schedules.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerName,
    /// Peak learning rate, for `lr_per` images per batch when set (scaled linearly).
    pub lr: f64,
    pub lr_per: Option<usize>,
    pub warmup_epochs: f64,
    pub min_lr: f64,
    /// Start and end of the cosine weight-decay schedule.
    pub weight_decay: (f64, f64),
    /// SGD momentum.
    pub momentum: f64,
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
    pub mean: &'static [f64],
    pub std: &'static [f64],
}

impl AugmentConfig {
    /// Random horizontal flips and normalization only (supervised training, tests).
    pub const fn flip_only(mean: &'static [f64], std: &'static [f64]) -> AugmentConfig {
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
    pub freeze_last_layer: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub augment: AugmentConfig,
}

impl DinoConfig {
    /// Student (= teacher) parameters: backbone and head.
    pub const fn num_params(&self) -> usize {
        self.backbone.num_params() + self.head.num_params(self.backbone.dim)
    }

    /// The peak learning rate for a total batch size (linear scaling when `lr_per` is set).
    pub fn peak_lr(&self, batch: usize) -> f64 {
        match self.optimizer.lr_per {
            Some(per) => self.optimizer.lr * batch as f64 / per as f64,
            None => self.optimizer.lr,
        }
    }
}
