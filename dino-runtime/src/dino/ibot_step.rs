//! The iBOT part of a DINO step (DINOv2's masked-patch objective): the inputs it adds (the
//! masks of the global crops, the gather of their masked patches, the patches' weights, the
//! patch center), its loss built on the student's and the teacher's patch tokens, and the
//! per-step masks.
//!
//! As DINOv2 does, only the masked patches go through the heads: a one-hot `(M, rows·P)`
//! matrix gathers them (M: the most patches the step's masks can hold), so the heads see M
//! rows instead of every patch of every global crop. Padding rows gather patch 0 with mask and
//! weight 0 (an all-zero row would meet the head's L2 normalization at 0, whose gradient is
//! 0/0 even when multiplied by a zero weight).
//!
//! ```text
//!   student patches (rows·P, D) ─ select · ─ iBOT head ─┐
//!   teacher patches (rows·P, D) ─ select · ─ iBOT head ─ targets (valid rows) ─ loss (weights)
//! ```
use luminal::prelude::*;
use rand::Rng;

use super::ibot::{ibot_center_update, ibot_loss, ibot_sinkhorn_knopp, ibot_targets};
use super::DinoStep;
use crate::config::{Centering, DinoConfig, IbotConfig};
use crate::data::masking::{batch_masks, masked_upper_bound, MaskGenerator};
use crate::dist::Replicas;
use crate::graph::{data, dims};
use crate::model::DinoModel;

/// The inputs an iBOT step adds, and what the host needs to fill them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IbotInputs {
    /// `(2 * batch, patches)`: 1 where the student sees the mask token.
    pub masks: NodeIndex,
    /// `(M, 2 * batch * patches)`: row `i` picks the `i`-th masked patch (padding: patch 0).
    pub select: NodeIndex,
    /// `(M,)`: 1 on the rows that hold a masked patch.
    pub valid: NodeIndex,
    /// `(M,)`: each masked patch's weight, `1 / masked patches of its crop` (0 on padding).
    pub weights: NodeIndex,
    /// The patch center `(K,)` (DINOv2's `ibot_patch_loss.center`), carried like DINO's.
    pub center: NodeIndex,
    /// Side of the global crops' patch grid.
    pub side: usize,
    /// M: the gathered rows (the most masked patches this rank's crops can hold).
    pub rows: usize,
}

/// What [`build`] adds to the graph.
pub(super) struct IbotParts<K: Dimension> {
    pub inputs: IbotInputs,
    pub loss: GraphTensor<R0>,
    pub new_center: GraphTensor<(K,)>,
}

/// The mask input of the global crops, `(2 * batch, patches)`.
pub(super) fn mask_input<M: DinoModel>(cx: &mut Graph) -> GraphTensor<(dims::GlobalRows, M::GlobalPatches)> {
    cx.named_tensor("ibot_masks")
}

/// The iBOT loss of one step from the student's (masked) and the teacher's patch tokens of
/// the global crops: both through their iBOT head, the teacher's centered as the objective
/// declares (EMA center or Sinkhorn-Knopp over the masked patches).
#[allow(clippy::too_many_arguments)]
pub(super) fn build<M: DinoModel>(
    student: &M,
    teacher: &M,
    s_patches: GraphTensor<(dims::GlobalRows, M::GlobalPatches, M::Embed)>,
    t_patches: GraphTensor<(dims::GlobalRows, M::GlobalPatches, M::Embed)>,
    masks: GraphTensor<(dims::GlobalRows, M::GlobalPatches)>,
    teacher_temp: GraphTensor<R0>,
    cfg: &DinoConfig,
    batch: usize,
    replicas: Replicas,
) -> IbotParts<M::Out> {
    let cx = masks.graph();
    let side = cfg.global.size / cfg.backbone.patch;
    let i = cfg.ibot.expect("an iBOT objective");
    let g = MaskGenerator::dinov2(side);
    let bound = masked_upper_bound(&g, 2 * batch * replicas.ranks, 2 * batch, i.mask_ratio, i.mask_probability);
    cx.set_dyn_dim(dims::PATCH_ROWS, 2 * batch * side * side);
    cx.set_dyn_dim(dims::MASKED_ROWS, bound);
    let select = cx.named_tensor::<(dims::MaskedRows, dims::PatchRows)>("ibot_select");
    let valid = cx.named_tensor::<(dims::MaskedRows,)>("ibot_valid");
    let weights = cx.named_tensor::<(dims::MaskedRows,)>("ibot_weights");
    let center = cx.named_tensor::<(M::Out,)>("ibot_center");
    let gather = |t: GraphTensor<(dims::GlobalRows, M::GlobalPatches, M::Embed)>| {
        select.matmul(t.contiguous().reshape::<(dims::PatchRows, M::Embed)>())
    };
    let s = student.ibot_head(gather(s_patches));
    let t = teacher.ibot_head(gather(t_patches));
    let q = match cfg.centering {
        Centering::Ema => ibot_targets(t, center, teacher_temp),
        Centering::SinkhornKnopp { iterations } => ibot_sinkhorn_knopp(t, valid, teacher_temp, iterations, replicas),
    };
    let loss = ibot_loss(q, s, weights, cfg.student_temp as f32, 2 * batch);
    let new_center = ibot_center_update(center, t, valid, cfg.center_momentum as f32, replicas);
    let inputs = IbotInputs {
        masks: masks.id,
        select: select.id,
        valid: valid.id,
        weights: weights.id,
        center: center.id,
        side,
        rows: bound,
    };
    IbotParts { inputs, loss, new_center }
}

/// The run-time checks of an iBOT objective for a step of `batch` images per rank: some
/// global crop of the global batch is masked, and a masked crop can get a patch.
pub(super) fn check(i: &IbotConfig, cfg: &DinoConfig, batch: usize, ranks: usize) -> crate::error::Result<()> {
    let crops = 2 * batch * ranks;
    let bad = |why: String| Err(crate::error::Error::Config { what: "iBOT masks".into(), why });
    if ((crops as f64) * i.mask_probability).floor() < 1.0 {
        return bad(format!(
            "a mask probability of {} masks no crop of a global batch of {crops} global crops: raise it or the batch",
            i.mask_probability
        ));
    }
    let side = cfg.global.size / cfg.backbone.patch;
    if ((side * side) as f64 * i.mask_ratio.1) < 1.0 {
        return bad(format!(
            "mask ratios up to {} mask no patch of the {side} x {side} grid of the global crops: raise the maximum",
            i.mask_ratio.1
        ));
    }
    Ok(())
}

impl<M: DinoModel> DinoStep<M> {
    /// Draw this step's iBOT masks (nothing without iBOT).
    pub fn draw_ibot_masks(&mut self, rng: &mut impl Rng) {
        self.set_ibot_masks_of_rank(rng, 0);
    }

    /// Draw the iBOT masks of the whole global batch (DINOv2's collate) and keep rank `rank`'s
    /// rows, view-major as the crops: the masks a 1-rank step of the global batch would give
    /// these images.
    pub fn set_ibot_masks_of_rank(&mut self, rng: &mut impl Rng, rank: usize) {
        let (Some(i), Some(cfg)) = (&self.ibot, self.config.ibot) else { return };
        let (b, n) = (self.batch, self.replicas);
        let g = MaskGenerator::dinov2(i.side);
        let p = g.patches();
        let (masks, _) = batch_masks(&g, 2 * b * n, cfg.mask_ratio, cfg.mask_probability, rng);
        let mine: Vec<f32> =
            (0..2).flat_map(|v| masks[(v * n + rank) * b * p..(v * n + rank + 1) * b * p].to_vec()).collect();
        self.set_ibot_masks(&mine).expect("the drawn masks fit the bound they were drawn under");
    }

    /// Set this step's iBOT masks from this rank's `(2 * batch, patches)` masks (1: masked):
    /// the student's mask input, the gather of the masked patches and their weights. More
    /// masked patches than the step was built to gather is an error.
    pub fn set_ibot_masks(&mut self, masks: &[f32]) -> crate::error::Result<()> {
        let Some(i) = self.ibot.clone() else { return Ok(()) };
        let p = i.side * i.side;
        let all = 2 * self.batch * p;
        if masks.len() != all {
            return Err(crate::error::Error::WrongSize {
                name: "ibot_masks".into(),
                shape: format!("({} x {p})", 2 * self.batch),
                expected: all,
                got: masks.len(),
            });
        }
        let masked: Vec<usize> = (0..all).filter(|&j| masks[j] != 0.0).collect();
        if masked.len() > i.rows {
            return Err(crate::error::Error::Config {
                what: "iBOT masks".into(),
                why: format!("{} masked patches, more than the {} the step gathers", masked.len(), i.rows),
            });
        }
        let mut select = vec![0f32; i.rows * all];
        let (mut valid, mut weights) = (vec![0f32; i.rows], vec![0f32; i.rows]);
        for (r, &j) in masked.iter().enumerate() {
            let crop = j / p;
            let count = masks[crop * p..(crop + 1) * p].iter().filter(|&&v| v != 0.0).count();
            select[r * all + j] = 1.0;
            valid[r] = 1.0;
            weights[r] = 1.0 / count as f32;
        }
        for r in masked.len()..i.rows {
            select[r * all] = 1.0;
        }
        let binary: Vec<f32> = masks.iter().map(|&v| (v != 0.0) as u8 as f32).collect();
        let cx = &mut self.train.cx;
        data::set(cx, i.masks, binary);
        data::set(cx, i.select, select);
        data::set(cx, i.valid, valid);
        data::set(cx, i.weights, weights);
        Ok(())
    }
}
