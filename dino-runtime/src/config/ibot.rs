//! iBOT's part of a DINO objective (`dino!`'s `ibot { .. }`).
use serde::Serialize;

use crate::error::{Error, Result};

/// iBOT's masked-patch objective as DINOv2 trains it: a fraction of the global crops get a
/// block-wise mask over their patches; the student sees the mask token in place of those
/// patches and predicts, through the head, the teacher's distribution of the unmasked patch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IbotConfig {
    /// The loss's weight in the objective (DINOv2's `ibot.loss_weight`: 1.0).
    pub weight: f64,
    /// The masked fraction of a masked crop's patches is drawn from this range
    /// (`mask_ratio_min_max`: 0.1..0.5).
    pub mask_ratio: (f64, f64),
    /// The fraction of the global crops that get a mask (`mask_sample_probability`: 0.5).
    pub mask_probability: f64,
    /// A head of its own for the patch tokens (`separate_head`; DINOv2's default shares the
    /// DINO head). It has the DINO head's sizes.
    pub separate_head: bool,
}

impl IbotConfig {
    /// DINOv2's defaults (`ssl_default_config.yaml`).
    pub const DINOV2: IbotConfig =
        IbotConfig { weight: 1.0, mask_ratio: (0.1, 0.5), mask_probability: 0.5, separate_head: false };

    /// Every value in its range, named with its key.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, why: String| Err(Error::Config { what: what.into(), why });
        if !(self.weight >= 0.0 && self.weight <= 10.0) {
            return bad("iBOT weight (--ibot-weight)", format!("{} is outside [0, 10] (DINOv2 uses 1)", self.weight));
        }
        let (lo, hi) = self.mask_ratio;
        if !(0.0 < lo && lo < hi && hi < 1.0) {
            return bad("iBOT mask ratio", format!("({lo}, {hi}) must satisfy 0 < min < max < 1 (DINOv2: 0.1..0.5)"));
        }
        if !(self.mask_probability > 0.0 && self.mask_probability <= 1.0) {
            return bad("iBOT mask probability", format!("{} is outside (0, 1] (DINOv2: 0.5)", self.mask_probability));
        }
        Ok(())
    }
}
