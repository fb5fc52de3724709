//! The DSL's hyperparameters as command-line flags (names as DINO's `main_dino.py`), each
//! overriding the preset's declared value for one run.
use dino_runtime::config::{ClipScope, CropConfig, DinoConfig};
use dino_runtime::{Error, Result};

/// Overrides of a preset's recipe. Unset flags keep the declared values (`dino models NAME`
/// prints them).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hyper {
    /// Epochs to train (the cosine schedules span exactly this many).
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    pub epochs: Option<usize>,
    /// Images per step, over all ranks of a data-parallel run (each of N ranks takes batch/N).
    /// The learning rate is scaled linearly with it (see --lr).
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    pub batch_size: Option<usize>,
    /// Peak learning rate, reached at the end of the warmup, for the preset's base batch (256
    /// in DINO's presets: the rate used is lr * batch_size / 256, DINO's linear scaling rule,
    /// 5e-4 in DINO; DINOv2's presets scale 4e-3 per 1024 by the square root).
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Learning rate at the end of training; a cosine schedule leads there after the warmup.
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub min_lr: Option<f64>,
    /// Epochs of linear learning-rate warmup from 0 (fractions allowed).
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub warmup_epochs: Option<f64>,
    /// Weight decay at the start. ViTs train well with a small value early on (0.04 in DINO).
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Weight decay at the end, reached along a cosine; a larger final decay helps ViTs
    /// (0.4 in DINO).
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub weight_decay_end: Option<f64>,
    /// Starting EMA momentum of the teacher; a cosine schedule raises it to 1. Small batches
    /// want a value closer to 1 (DINO suggests 0.9995 for a batch of 256; 0.996 at 1024).
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub momentum_teacher: Option<f64>,
    /// Teacher temperature after its warmup. Above about 0.07 training tends to be unstable;
    /// start from 0.04 and raise it a little only if needed.
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub teacher_temp: Option<f64>,
    /// Teacher temperature at the start of its warmup (0.04 usually works; lower it if the
    /// loss does not go down).
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub warmup_teacher_temp: Option<f64>,
    /// Epochs of linear teacher-temperature warmup (0: no warmup; the paper uses 30).
    #[arg(long, allow_negative_numbers = true)]
    pub warmup_teacher_temp_epochs: Option<usize>,
    /// Student temperature (0.1 in DINO).
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub student_temp: Option<f64>,
    /// Momentum of the center of the teacher outputs (0.9 in DINO).
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub center_momentum: Option<f64>,
    /// Largest gradient norm of each parameter tensor (clipped one tensor at a time, not
    /// globally), or of each module with --clip-per module; 0 disables clipping. 0.3 to 1.0
    /// can help large ViTs (3.0 in DINO and DINOv2).
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub clip_grad: Option<f64>,
    /// What --clip-grad bounds: each parameter's gradient norm (DINO) or the joint norm of each
    /// module, backbone and heads apart (DINOv2) [default: the preset's].
    #[arg(long, value_enum)]
    pub clip_per: Option<ClipPer>,
    /// DINOv2's layer-wise lr decay in (0, 1]: block i of L learns at decay^(L - i) of the lr,
    /// the embeddings at decay^(L + 1); 1 is off (DINOv2: 0.9) [default: the preset's].
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub layer_decay: Option<f64>,
    /// DINOv2's lr multiplier of the patch embedding, in (0, 1]; 1 is off (DINOv2: 0.2)
    /// [default: the preset's].
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub patch_embed_lr: Option<f64>,
    /// Epochs during which the last layer of the head is not updated. Freezing it in the first
    /// epoch helps; raise this if the loss does not go down.
    #[arg(long, allow_negative_numbers = true)]
    pub freeze_last_layer: Option<usize>,
    /// Stochastic-depth rate of the student (the teacher never drops).
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub drop_path_rate: Option<f64>,
    /// Number of small local views per image; 0 disables multi-crop (then a wider global
    /// scale such as 0.14 1.0 is recommended).
    #[arg(long, allow_negative_numbers = true)]
    pub local_crops_number: Option<usize>,
    /// Area range (fractions of the image) of the global crops before resizing.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"], value_parser = finite)]
    pub global_crops_scale: Option<Vec<f64>>,
    /// Area range (fractions of the image) of the local crops before resizing.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"], value_parser = finite)]
    pub local_crops_scale: Option<Vec<f64>>,
    /// Weight of DINOv2's KoLeo regularizer on the student's global [CLS] features, in [0, 1]
    /// (0 disables it; DINOv2 uses 0.1) [default: the preset's].
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub koleo: Option<f64>,
    /// Center the teacher with DINOv2's Sinkhorn-Knopp, this many iterations (1 to 100;
    /// DINOv2 runs 3), instead of DINO's running center; 0 keeps the running center
    /// [default: the preset's].
    #[arg(long, value_name = "ITERATIONS")]
    pub sinkhorn_knopp: Option<usize>,
    /// Weight of iBOT's masked-patch loss, for presets that declare iBOT (0 to 10; DINOv2
    /// uses 1) [default: the preset's].
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    pub ibot_weight: Option<f64>,
}

/// `--clip-per`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipPer {
    Parameter,
    Module,
}

fn scale(v: &[f64], what: &str) -> Result<(f64, f64)> {
    match v {
        [lo, hi] => Ok((*lo, *hi)),
        _ => Err(Error::Config { what: what.into(), why: format!("needs 2 values (min max), got {}", v.len()) }),
    }
}

/// A float flag's value: a finite number (NaN and infinities are refused by name, rather than
/// lost on the way to `config.json`, which has no spelling for them).
pub fn finite(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number")),
        Err(e) => Err(e.to_string()),
    }
}

/// A duration or size flag's value: a finite number above 0.
pub fn positive_f64(s: &str) -> std::result::Result<f64, String> {
    match finite(s)? {
        v if v > 0.0 => Ok(v),
        v => Err(format!("{v} must be above 0")),
    }
}

/// A count flag's value (batch sizes, epochs, limits, runs): a whole number of at least 1.
pub fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(e.to_string()),
    }
}

impl Hyper {
    /// `self` with every flag set in `over` replaced.
    pub fn merged(&self, over: &Hyper) -> Hyper {
        let j = |h: &Hyper| serde_json::to_value(h).expect("serializable");
        let mut base = j(self);
        for (k, v) in j(over).as_object().expect("object") {
            if !v.is_null() {
                base[k] = v.clone();
            }
        }
        serde_json::from_value(base).expect("same type")
    }

    /// The preset's recipe with these overrides (checked by the step builder).
    pub fn apply(&self, declared: &DinoConfig) -> Result<DinoConfig> {
        let mut c = *declared;
        let o = &mut c.optimizer;
        if let Some(v) = self.epochs {
            c.epochs = v;
        }
        if let Some(v) = self.batch_size {
            c.batch_size = v;
        }
        if let Some(v) = self.lr {
            o.lr = v;
        }
        if let Some(v) = self.min_lr {
            o.min_lr = v;
        }
        if let Some(v) = self.warmup_epochs {
            o.warmup_epochs = v;
        }
        if let Some(v) = self.weight_decay {
            o.weight_decay.0 = v;
        }
        if let Some(v) = self.weight_decay_end {
            o.weight_decay.1 = v;
        }
        if let Some(v) = self.momentum_teacher {
            c.teacher_momentum.0 = v;
        }
        if let Some(v) = self.teacher_temp {
            c.teacher_temp.1 = v;
            if self.warmup_teacher_temp.is_none() && declared.teacher_temp.2 == 0.0 {
                c.teacher_temp.0 = v; // no warmup declared: one temperature throughout
            }
        }
        if let Some(v) = self.warmup_teacher_temp {
            c.teacher_temp.0 = v;
        }
        if let Some(v) = self.warmup_teacher_temp_epochs {
            c.teacher_temp.2 = v as f64;
        }
        if let Some(v) = self.student_temp {
            c.student_temp = v;
        }
        if let Some(v) = self.center_momentum {
            c.center_momentum = v;
        }
        if let Some(v) = self.clip_grad {
            c.clip_grad = v;
        }
        if let Some(p) = self.clip_per {
            c.clip_scope = match p {
                ClipPer::Parameter => ClipScope::Parameter,
                ClipPer::Module => ClipScope::Module,
            };
        }
        if let Some(v) = self.layer_decay {
            c.optimizer.layer_decay = v;
        }
        if let Some(v) = self.patch_embed_lr {
            c.optimizer.patch_embed_lr = v;
        }
        if let Some(n) = self.sinkhorn_knopp {
            c.centering = match n {
                0 => dino_runtime::config::Centering::Ema,
                iterations => dino_runtime::config::Centering::SinkhornKnopp { iterations },
            };
        }
        if let Some(v) = self.koleo {
            c.koleo = v;
        }
        if let Some(v) = self.ibot_weight {
            match c.ibot.as_mut() {
                Some(i) => i.weight = v,
                None => {
                    return Err(Error::Config {
                        what: "iBOT weight (--ibot-weight)".into(),
                        why: format!("`{}` declares no iBOT loss (fmnist-dinov2 and dinov2-vits14 do)", c.name),
                    })
                }
            }
        }
        if let Some(v) = self.freeze_last_layer {
            c.freeze_last_layer = v;
        }
        if let Some(v) = self.drop_path_rate {
            c.backbone.drop_path = v;
        }
        if let Some(v) = &self.global_crops_scale {
            c.global.scale = scale(v, "--global-crops-scale")?;
        }
        if let Some(n) = self.local_crops_number {
            c.local = match (c.local, declared.local) {
                (_, None) if n > 0 => {
                    return Err(Error::Config {
                        what: "--local-crops-number".into(),
                        why: format!("`{}` declares no local crops (their size is part of the model)", declared.name),
                    })
                }
                (_, None) => None,
                (Some(l), _) => Some(CropConfig { count: n, ..l }),
                (None, Some(d)) => Some(CropConfig { count: n, ..d }),
            };
        }
        if let Some(v) = &self.local_crops_scale {
            let s = scale(v, "--local-crops-scale")?;
            if let Some(l) = &mut c.local {
                l.scale = s;
            }
        }
        c.validate(declared)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::FmnistSmall;

    #[test]
    fn overrides_replace_declared_values_and_bad_ones_are_named() {
        let d = FmnistSmall::CONFIG;
        let h = Hyper {
            lr: Some(1e-3),
            teacher_temp: Some(0.05),
            local_crops_number: Some(2),
            global_crops_scale: Some(vec![0.14, 1.0]),
            ..Default::default()
        };
        let c = h.apply(&d).unwrap();
        assert_eq!(c.optimizer.lr, 1e-3);
        assert_eq!(c.teacher_temp, (0.05, 0.05, 0.0));
        assert_eq!(c.local.unwrap().count, 2);
        assert_eq!(c.local.unwrap().size, 12);
        assert_eq!(c.global.scale, (0.14, 1.0));
        assert_eq!(Hyper::default().apply(&d).unwrap(), d);
        let e = Hyper { epochs: Some(0), ..Default::default() }.apply(&d).unwrap_err().to_string();
        assert!(e.contains("--epochs"), "{e}");
        let c = Hyper { koleo: Some(0.1), ..Default::default() }.apply(&d).unwrap();
        assert_eq!(c.koleo, 0.1);
        let e = Hyper { koleo: Some(5.0), ..Default::default() }.apply(&d).unwrap_err().to_string();
        assert!(e.contains("--koleo") && e.contains("[0, 1]"), "{e}");
        let e = Hyper { ibot_weight: Some(0.5), ..Default::default() }.apply(&d).unwrap_err().to_string();
        assert!(e.contains("--ibot-weight") && e.contains("declares no iBOT"), "{e}");
        let v2 = crate::models::FmnistDinov2::CONFIG;
        let c = Hyper { ibot_weight: Some(0.5), ..Default::default() }.apply(&v2).unwrap();
        assert_eq!(c.ibot.unwrap().weight, 0.5);
        let e = Hyper { ibot_weight: Some(20.0), ..Default::default() }.apply(&v2).unwrap_err().to_string();
        assert!(e.contains("--ibot-weight") && e.contains("[0, 10]"), "{e}");
        // DINOv2's optimizer terms on a DINO preset
        let c = Hyper {
            layer_decay: Some(0.8),
            patch_embed_lr: Some(0.2),
            clip_per: Some(ClipPer::Module),
            ..Default::default()
        }
        .apply(&d)
        .unwrap();
        assert_eq!((c.optimizer.layer_decay, c.optimizer.patch_embed_lr, c.clip_scope), (0.8, 0.2, ClipScope::Module));
        for h in [
            Hyper { layer_decay: Some(1.2), ..Default::default() },
            Hyper { layer_decay: Some(0.0), ..Default::default() },
        ] {
            let e = h.apply(&d).unwrap_err().to_string();
            assert!(e.contains("--layer-decay") && e.contains("(0, 1]"), "{e}");
        }
        let e = Hyper { patch_embed_lr: Some(-0.2), ..Default::default() }.apply(&d).unwrap_err().to_string();
        assert!(e.contains("--patch-embed-lr"), "{e}");
        let merged = h.merged(&Hyper { lr: Some(2e-3), ..Default::default() });
        assert_eq!((merged.lr, merged.teacher_temp), (Some(2e-3), Some(0.05)));
    }
}
