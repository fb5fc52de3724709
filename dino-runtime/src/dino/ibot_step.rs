//! The iBOT part of a DINO step (DINOv2's masked-patch objective): the inputs it adds (the
//! masks of the global crops, the weights of their patches, the patch center), its loss
//! built on the student's and the teacher's patch tokens, and the per-step masks.
use luminal::prelude::*;
use rand::Rng;

use super::ibot::{ibot_center_update, ibot_loss, ibot_sinkhorn_knopp, ibot_targets};
use super::DinoStep;
use crate::config::{Centering, DinoConfig, IbotConfig};
use crate::data::masking::{batch_masks, MaskGenerator};
use crate::dist::Replicas;
use crate::graph::{data, dims};
use crate::model::DinoModel;

/// The inputs an iBOT step adds, and what the host needs to fill them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IbotInputs {
    /// `(2 * batch, patches)`: 1 where the student sees the mask token.
    pub masks: NodeIndex,
    /// `(2 * batch * patches,)`: each masked patch's weight, `1 / masked patches of its crop`.
    pub weights: NodeIndex,
    /// The patch center `(K,)` (DINOv2's `ibot_patch_loss.center`), carried like DINO's.
    pub center: NodeIndex,
    /// Side of the global crops' patch grid.
    pub side: usize,
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
    let weights = cx.named_tensor::<(dims::PatchRows,)>("ibot_weights");
    let center = cx.named_tensor::<(M::Out,)>("ibot_center");
    let rows = |t: GraphTensor<(dims::GlobalRows, M::GlobalPatches, M::Embed)>| {
        t.contiguous().reshape::<(dims::PatchRows, M::Embed)>()
    };
    let s = student.ibot_head(rows(s_patches));
    let t = teacher.ibot_head(rows(t_patches));
    let mask_rows = masks.reshape::<(dims::PatchRows,)>();
    let q = match cfg.centering {
        Centering::Ema => ibot_targets(t, center, teacher_temp),
        Centering::SinkhornKnopp { iterations } => {
            ibot_sinkhorn_knopp(t, mask_rows, teacher_temp, iterations, replicas)
        }
    };
    let loss = ibot_loss(q, s, weights, cfg.student_temp as f32, 2 * batch);
    let new_center = ibot_center_update(center, t, mask_rows, cfg.center_momentum as f32, replicas);
    let side = cfg.global.size / cfg.backbone.patch;
    IbotParts { inputs: IbotInputs { masks: masks.id, weights: weights.id, center: center.id, side }, loss, new_center }
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
    pub fn set_ibot_masks(&mut self, rng: &mut impl Rng) {
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
        let (masks, weights) = batch_masks(&g, 2 * b * n, cfg.mask_ratio, cfg.mask_probability, rng);
        let mine = |all: &[f32]| -> Vec<f32> {
            (0..2).flat_map(|v| all[(v * n + rank) * b * p..(v * n + rank + 1) * b * p].to_vec()).collect()
        };
        let (masks, weights) = (mine(&masks), mine(&weights));
        let (mid, wid) = (i.masks, i.weights);
        data::set(&mut self.train.cx, mid, masks);
        data::set(&mut self.train.cx, wid, weights);
    }
}
