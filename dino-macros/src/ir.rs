//! Validated declarations as plain data: what code generation reads.
use proc_macro2::Span;
use syn::{Attribute, Ident, Path, Visibility};

/// A validated `vit!` declaration.
pub struct VitIr {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub doc: String,
    pub image: usize,
    pub patch: usize,
    pub channels: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// Hidden width (SwiGLU: the gated width, DINOv2's rounding of the declared one).
    pub mlp: usize,
    /// DINOv2's SwiGLU feed-forward instead of GELU.
    pub swiglu: bool,
    pub qkv_bias: bool,
    pub norm_eps: f64,
    pub drop_path: f64,
    /// LayerScale's initial value; none without LayerScale.
    pub layer_scale: Option<f64>,
    /// Register tokens (0: none).
    pub registers: usize,
    /// DINOv2's antialiased position-embedding interpolation instead of DINO's bicubic.
    pub antialiased: bool,
}

impl VitIr {
    /// The first MLP layer's width (SwiGLU packs both halves: twice the hidden width).
    pub fn mlp_packed(&self) -> usize {
        if self.swiglu {
            self.mlp.saturating_mul(2)
        } else {
            self.mlp
        }
    }
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
    /// Patches per side at the native size.
    pub fn grid(&self) -> usize {
        self.image / self.patch
    }
    /// Position embeddings ([CLS] + patches at the native size).
    pub fn positions(&self) -> usize {
        // saturating: an absurd declaration gets rustc's errors, not a panicking macro
        self.grid().saturating_mul(self.grid()).saturating_add(1)
    }
    /// Tokens the blocks see at the native size ([CLS] + registers + patches).
    pub fn tokens(&self) -> usize {
        self.positions().saturating_add(self.registers)
    }
}

/// A group of crops.
pub struct CropIr {
    pub count: usize,
    pub size: usize,
    /// Where the size was written (for the patch-divisibility check in generated code).
    pub size_span: Span,
    pub scale: (f64, f64),
}

pub struct HeadIr {
    pub hidden: usize,
    pub bottleneck: usize,
    pub out: usize,
    pub layers: usize,
    pub norm_last_layer: bool,
}

#[derive(Clone, Copy, PartialEq)]
pub enum OptKind {
    AdamW,
    Sgd,
}

pub struct OptimizerIr {
    pub kind: OptKind,
    /// Base learning rate (for `lr_per` images per batch when set).
    pub lr: f64,
    pub lr_per: Option<usize>,
    /// `per N sqrt`: the lr scales by the square root of the batch ratio (DINOv2).
    pub lr_sqrt: bool,
    pub warmup_epochs: f64,
    pub min_lr: f64,
    pub weight_decay: (f64, f64),
    pub momentum: f64,
    /// DINOv2's layer-wise lr decay (1: off).
    pub layer_decay: f64,
    /// DINOv2's patch-embedding lr multiplier (1: off).
    pub patch_embed_lr: f64,
}

pub struct AugmentIr {
    pub flip: f64,
    /// brightness, contrast, saturation, hue and the probability; none when off.
    pub color_jitter: Option<([f64; 4], f64)>,
    pub grayscale: f64,
    /// sigma range, probabilities (global 1, global 2, local), kernel size (0: from sigma).
    pub blur: Option<((f64, f64), [f64; 3], usize)>,
    /// threshold in [0, 1], probability (global 2 only).
    pub solarize: Option<(f64, f64)>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Where `normalize` was written, if it was (its length is checked against the channels).
    pub normalize_span: Option<Span>,
    /// The declared normalization was refused (an error is reported already): no channel
    /// check on top of it, so the user sees one error, not two.
    pub normalize_refused: bool,
}

/// A validated `dino!` declaration.
pub struct DinoIr {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub doc: String,
    pub backbone: Path,
    pub head: HeadIr,
    pub global: CropIr,
    pub local: Option<CropIr>,
    pub student_temp: f64,
    /// start, end, linear warmup in epochs.
    pub teacher_temp: (f64, f64, f64),
    pub center_momentum: f64,
    /// start, end (cosine per iteration).
    pub teacher_momentum: (f64, f64),
    pub optimizer: OptimizerIr,
    /// 0: no clipping.
    pub clip_grad: f64,
    /// `per module`: each module's joint gradient norm (DINOv2), not each parameter's.
    pub clip_per_module: bool,
    pub freeze_last_layer: usize,
    /// `zero_lr`: the frozen last layer is stepped at lr 0 (DINOv2), not skipped.
    pub freeze_zero_lr: bool,
    pub epochs: usize,
    pub batch_size: usize,
    pub augment: AugmentIr,
    /// KoLeo's weight (0: none).
    pub koleo: f64,
    /// Sinkhorn-Knopp iterations of DINOv2's teacher centering (`None`: DINO's EMA center).
    pub sinkhorn_knopp: Option<usize>,
    /// iBOT's masked-patch loss, when declared.
    pub ibot: Option<IbotIr>,
}

/// iBOT's masked-patch loss (`ibot: { .. }`).
pub struct IbotIr {
    pub weight: f64,
    pub mask_ratio: (f64, f64),
    pub mask_probability: f64,
    pub separate_head: bool,
    /// Where `ibot` was written (the global crops' patch grid is checked against it).
    pub span: Span,
}
