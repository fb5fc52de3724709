//! dino: DINO self-supervised learning of Vision Transformers on luminal graphs.
//!
//! Declare backbones and objectives with [`vit!`] and [`dino!`] (grammar below), train and
//! evaluate them with the `dino` command line, or drive the runtime directly.
//!
//! ```ignore
//! dino::vit! {
//!     /// ViT-S/16 (DINO Table 1).
//!     pub VitSmall16 { image: 224, patch: 16, channels: 3, dim: 384, depth: 12, heads: 6,
//!                      mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1 }
//! }
//! dino::dino! {
//!     /// DINO ViT-S/16, 2x224 + 10x96 crops.
//!     pub DinoVitS16 for VitSmall16 {
//!         head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: true },
//!         crops: { global: 2 x 224 scale 0.4..1.0, local: 10 x 96 scale 0.05..0.4 },
//!         student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 30 epochs,
//!         center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine,
//!         optimizer: adamw { lr: 5e-4 per 256, warmup: 10 epochs, min_lr: 1e-6,
//!                            weight_decay: 0.04 -> 0.4 },
//!         clip_grad: 3.0, freeze_last_layer: 1 epochs,
//!     }
//! }
//! ```
//!
//! `vit!` keys: `image`, `patch`, `dim`, `depth`, `heads` (required), `channels` (3),
//! `mlp_ratio` (4) or `mlp` (a width), `mlp: gelu | swiglu` (gelu; DINOv2's SwiGLU takes
//! `(int(2/3 mlp_ratio dim) + 7) // 8 * 8` hidden channels), `qkv_bias` (true), `norm_eps`
//! (1e-6), `drop_path` (0), `layer_scale` (none; DINOv2's blocks start LayerScale at `1e-5`),
//! `registers` (0; DINOv2 with registers: 4).
//!
//! `dino!` keys: `head { hidden, bottleneck, out, layers (3), norm_last_layer (true) }`,
//! `crops { global: 2 x SIZE scale LO..HI, local: N x SIZE scale LO..HI }`, `student_temp`,
//! `teacher_temp: START (-> END warmup N epochs)`, `teacher_momentum: START -> END cosine`,
//! `optimizer: adamw|sgd { lr: X (per N (sqrt)), warmup: N epochs, min_lr, weight_decay: A -> B,
//! momentum (sgd), layer_decay (1; DINOv2: 0.9), patch_embed_lr (1; DINOv2: 0.2) }` (required);
//! `center_momentum` (0.9), `clip_grad: N (per parameter | per module)` (3.0 per parameter,
//! 0 = off; DINOv2 clips per module), `freeze_last_layer: N epochs (zero_lr)` (1; DINOv2 freezes
//! by lr 0), `epochs` (100), `batch_size` (64), `augment { flip: P,
//! color_jitter: [B, C, S, H] p P | off, grayscale: P | off, blur: sigma LO..HI p [P1, P2, PL]
//! (kernel K) | off, solarize: threshold T p P | off, normalize: mean [..] std [..] }`
//! (DINO's ImageNet pipeline by default), `koleo: W` (0; DINOv2's KoLeo on the student's
//! global [CLS] features, weight in [0, 1], DINOv2 uses 0.1), `centering: ema |
//! sinkhorn_knopp(N)` (`ema`, DINO's running center; DINOv2's Sinkhorn-Knopp teacher, N in
//! 1..=100 iterations, DINOv2 runs 3, refused beside `center_momentum`), `ibot { weight (1.0),
//! mask_ratio: LO..HI (0.1..0.5), mask_probability (0.5), separate_head (false) }` (none;
//! DINOv2's masked-patch loss: weight in (0, 10], ratios inside (0, 1) and ordered, the global
//! crops at least 3 x 3 patches).
pub use dino_macros::{dino, vit};
pub use dino_models as models;
pub use dino_runtime as runtime;

pub mod bench;
pub mod cli;
pub mod compiled;
pub mod dataset;
pub mod device;
pub mod eval;
pub mod inspect;
pub mod plot;
pub mod progress;
pub mod resources;
pub mod train;
pub mod weights;
