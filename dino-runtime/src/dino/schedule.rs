//! DINO's schedules (`utils.cosine_scheduler` and the teacher-temperature warmup of
//! `DINOLoss`): per-iteration learning rate, weight decay and teacher momentum, per-epoch
//! teacher temperature.
use crate::config::DinoConfig;

/// `cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs, start_warmup)`: a
/// linear warmup from `start_warmup` to `base` over `floor(warmup_epochs * niter_per_ep)`
/// iterations (both ends included, as `np.linspace`), then a half cosine from `base` to
/// `final` over the remaining iterations.
pub fn cosine(
    base: f64,
    final_value: f64,
    epochs: usize,
    niter_per_ep: usize,
    warmup_epochs: f64,
    start_warmup: f64,
) -> Vec<f64> {
    let total = epochs * niter_per_ep;
    let warmup = ((warmup_epochs * niter_per_ep as f64) as usize).min(total);
    let mut out = Vec::with_capacity(total);
    for i in 0..warmup {
        out.push(if warmup == 1 {
            start_warmup
        } else {
            start_warmup + (base - start_warmup) * i as f64 / (warmup - 1) as f64
        });
    }
    let rest = total - warmup;
    for i in 0..rest {
        let t = std::f64::consts::PI * i as f64 / rest as f64;
        out.push(final_value + 0.5 * (base - final_value) * (1.0 + t.cos()));
    }
    out
}

/// The teacher temperature of each epoch: linear from `start` to `end` over `warmup_epochs`
/// epochs (`np.linspace`, both ends included), then `end`.
pub fn teacher_temp(start: f64, end: f64, warmup_epochs: usize, epochs: usize) -> Vec<f64> {
    (0..epochs)
        .map(|e| {
            if e >= warmup_epochs {
                end
            } else if warmup_epochs == 1 {
                start
            } else {
                start + (end - start) * e as f64 / (warmup_epochs - 1) as f64
            }
        })
        .collect()
}

/// Every schedule of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedules {
    pub niter_per_ep: usize,
    pub lr: Vec<f64>,
    pub weight_decay: Vec<f64>,
    pub momentum: Vec<f64>,
    pub teacher_temp: Vec<f64>,
    pub freeze_last_layer: usize,
}

impl Schedules {
    /// The schedules of `cfg` over `cfg.epochs` epochs of `niter_per_ep` steps of `batch`
    /// images (the learning rate scales with the batch as declared).
    pub fn new(cfg: &DinoConfig, niter_per_ep: usize, batch: usize) -> Schedules {
        let o = &cfg.optimizer;
        let e = cfg.epochs;
        let (tt0, tt1, tt_warm) = cfg.teacher_temp;
        Schedules {
            niter_per_ep,
            lr: cosine(cfg.peak_lr(batch), o.min_lr, e, niter_per_ep, o.warmup_epochs, 0.0),
            weight_decay: cosine(o.weight_decay.0, o.weight_decay.1, e, niter_per_ep, 0.0, 0.0),
            momentum: cosine(cfg.teacher_momentum.0, cfg.teacher_momentum.1, e, niter_per_ep, 0.0, 0.0),
            teacher_temp: teacher_temp(tt0, tt1, tt_warm as usize, e),
            freeze_last_layer: cfg.freeze_last_layer,
        }
    }

    /// The hyperparameters of global iteration `it`.
    pub fn at(&self, it: usize) -> super::StepHyper {
        let epoch = it / self.niter_per_ep;
        let last = |v: &[f64]| v[it.min(v.len().saturating_sub(1))];
        super::StepHyper {
            lr: last(&self.lr),
            weight_decay: last(&self.weight_decay),
            momentum: last(&self.momentum),
            teacher_temp: self.teacher_temp[epoch.min(self.teacher_temp.len() - 1)],
            freeze_last_layer: epoch < self.freeze_last_layer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of DINO's `cosine_scheduler` computed with numpy for these arguments.
    #[test]
    fn cosine_matches_dino_scheduler() {
        let s = cosine(1e-3, 1e-6, 2, 10, 0.5, 0.0);
        assert_eq!(s.len(), 20);
        // warmup: linspace(0, 1e-3, 5)
        for (i, w) in [0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3].iter().enumerate() {
            assert!((s[i] - w).abs() < 1e-15, "{i}: {}", s[i]);
        }
        // cosine over the 15 remaining iterations starts at base, never reaches final
        assert!((s[5] - 1e-3).abs() < 1e-15);
        let want_10 = 1e-6 + 0.5 * (1e-3 - 1e-6) * (1.0 + (std::f64::consts::PI * 5.0 / 15.0).cos());
        assert!((s[10] - want_10).abs() < 1e-15);
        assert!(s[19] > 1e-6 && s[19] < 2e-5);
        // no warmup; momentum 0.996 -> 1
        let m = cosine(0.996, 1.0, 1, 4, 0.0, 0.0);
        assert_eq!(m[0], 0.996);
        assert!(m.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn teacher_temperature_warmup_is_per_epoch() {
        assert_eq!(teacher_temp(0.04, 0.07, 0, 3), [0.07, 0.07, 0.07]);
        let t = teacher_temp(0.04, 0.07, 4, 6);
        assert!((t[1] - 0.05).abs() < 1e-12 && t[3] == 0.07 && t[5] == 0.07, "{t:?}");
    }
}
