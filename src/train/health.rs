//! Telling a collapsed run from a slow one, while it trains.
//!
//! The paper (section 5.3, Fig. 7) names the two ways DINO collapses, and users of the
//! reference meet both without recognising them (dino #43 and #246, dinov2 #407):
//!
//! ```text
//!              teacher entropy H(P_t)   entropy of the batch mean H(mean P_t)   loss
//!  healthy     well below ln K          near ln K (images use many prototypes)  moves
//!  uniform     ~ ln K                   ~ ln K                                  ~ ln K
//!  one dim.    ~ 0                      ~ 0 (every image the same prototype)    ~ 0
//!  stalled     anything                 anything                                flat at its start
//! ```
//!
//! Centering without enough sharpening drives the teacher to the uniform distribution;
//! sharpening without enough centering lets one dimension win. A [`Monitor`] reads the step
//! records the trainer logs and raises each [`Symptom`] at most once per run, when it has held
//! over a whole window of iterations; the [`Thresholds`] are fractions of ln K, so they mean
//! the same for any head size. The monitor sees only logged records, so a resumed run that
//! replays its log raises the same alerts at the same iterations.
use std::collections::VecDeque;

use super::log::StepRecord;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Symptom {
    /// The teacher's outputs are (nearly) uniform and the loss sits at ln K.
    UniformCollapse,
    /// One output dimension takes every image: the teacher is one-hot and so is its mean.
    OneDimensionCollapse,
    /// The loss has not fallen from where it started.
    Stalled,
}

impl Symptom {
    pub fn name(self) -> &'static str {
        match self {
            Symptom::UniformCollapse => "uniform collapse",
            Symptom::OneDimensionCollapse => "one-dimension collapse",
            Symptom::Stalled => "the loss does not move",
        }
    }

    /// What to change, each with its reason.
    pub fn advice(self) -> &'static [&'static str] {
        match self {
            Symptom::UniformCollapse => &[
                "lower --teacher-temp (and --warmup-teacher-temp): sharpening is what keeps centering from \
                 flattening the teacher to uniform (the reference's authors suggest 0.02 when 0.04 collapses)",
                "raise --center-momentum toward 0.99: a slower center subtracts less of each batch's signal",
                "raise --momentum-teacher (0.999 or more for small batches): a teacher that moves with the \
                 student follows it into the trivial solution",
                "lower --lr or lengthen --warmup-epochs: a large early step can jump to the uniform fixed point",
            ],
            Symptom::OneDimensionCollapse => &[
                "lower --center-momentum (e.g. 0.9): the center must follow the teacher fast enough to subtract \
                 the dimension that is taking over",
                "raise --teacher-temp slightly: too sharp a teacher turns one strong dimension into a one-hot \
                 target for every image",
                "raise --batch-size: the center is a batch mean, and a small batch estimates it poorly",
                "lower --lr: the student drifts to the dominant dimension faster than the center corrects it",
            ],
            Symptom::Stalled => &[
                "raise --lr or shorten --warmup-epochs: the student may be taking steps too small to move",
                "lower --momentum-teacher (e.g. 0.99): a teacher that barely changes gives the student a fixed \
                 target, and with small data it never improves",
                "check --freeze-last-layer against --epochs: a frozen last layer for the whole run leaves little \
                 to learn",
                "lower --teacher-temp: an almost uniform target carries little information to learn from",
            ],
        }
    }
}

/// When a symptom is raised. Entropies and losses are compared as fractions of ln K.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// A symptom must hold on every record of the last `window` iterations (and the window
    /// must hold at least `min_records` of them).
    pub window: usize,
    pub min_records: usize,
    /// Uniform: teacher entropy and loss both above this fraction of ln K.
    pub uniform: f64,
    /// One dimension: the entropy of the batch-mean teacher output below this fraction of ln K.
    pub one_dim: f64,
    /// Stalled: after `stall_after` iterations, no window's mean loss has fallen this fraction
    /// below the first window's.
    pub stall_drop: f64,
    pub stall_after: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { window: 100, min_records: 5, uniform: 0.97, one_dim: 0.1, stall_drop: 0.02, stall_after: 250 }
    }
}

impl Thresholds {
    /// The defaults for a log with a step record every `log_every` iterations: the window
    /// grows to hold `min_records` records (and the stall check waits as many windows).
    pub fn for_log_every(log_every: usize) -> Thresholds {
        let d = Thresholds::default();
        let window = d.window.max(d.min_records * log_every.max(1));
        Thresholds { window, stall_after: d.stall_after * window / d.window, ..d }
    }
}

/// A raised symptom: what was seen, at which iteration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    pub symptom: Symptom,
    pub epoch: usize,
    pub iteration: usize,
    /// The measurements that raised it.
    pub seen: String,
    pub advice: Vec<String>,
}

impl Alert {
    /// The message printed once.
    pub fn message(&self) -> String {
        let mut s = format!(
            "warning: {} at iteration {} (epoch {}): {}\n  what to change:",
            self.symptom.name(),
            self.iteration,
            self.epoch + 1,
            self.seen
        );
        for a in &self.advice {
            s.push_str("\n  - ");
            s.push_str(a);
        }
        s
    }
}

#[derive(Debug, Clone, Copy)]
struct Point {
    iteration: usize,
    loss: f64,
    ln_k: f64,
    entropy: f64,
    mean_entropy: f64,
}

/// Watches a run's step records (see the module doc).
#[derive(Debug, Clone)]
pub struct Monitor {
    th: Thresholds,
    recent: VecDeque<Point>,
    first_seen: Option<usize>,
    /// The mean loss of the first full window, then the lowest window mean since.
    first_mean: Option<f64>,
    lowest_mean: f64,
    raised: Vec<Symptom>,
}

impl Monitor {
    pub fn new(th: Thresholds) -> Monitor {
        Monitor {
            th,
            recent: VecDeque::new(),
            first_seen: None,
            first_mean: None,
            lowest_mean: f64::INFINITY,
            raised: vec![],
        }
    }

    /// Symptoms raised so far.
    pub fn raised(&self) -> &[Symptom] {
        &self.raised
    }

    /// Take in the next logged step; a symptom seen for the first time is returned.
    pub fn observe(&mut self, r: &StepRecord) -> Option<Alert> {
        let p = Point {
            iteration: r.iteration,
            loss: r.loss,
            ln_k: r.ln_k,
            entropy: r.teacher_entropy,
            mean_entropy: r.teacher_mean_entropy,
        };
        self.recent.push_back(p);
        while self.recent.front().is_some_and(|q| q.iteration + self.th.window <= p.iteration) {
            self.recent.pop_front();
        }
        // judged once the run has been watched for (nine tenths of) a window, with enough
        // records in the window
        let first_seen = *self.first_seen.get_or_insert(p.iteration);
        let start = self.recent.front().map_or(p.iteration, |q| q.iteration);
        let full = self.recent.len() >= self.th.min_records && p.iteration + 1 >= first_seen + self.th.window * 9 / 10;
        if !full || !p.ln_k.is_finite() || p.ln_k <= 0.0 {
            return None;
        }
        let n = self.recent.len() as f64;
        let mean = self.recent.iter().map(|q| q.loss).sum::<f64>() / n;
        let first = *self.first_mean.get_or_insert(mean);
        self.lowest_mean = self.lowest_mean.min(mean);
        let all = |f: &dyn Fn(&Point) -> bool| self.recent.iter().all(f);
        let th = self.th;
        let found = if all(&|q| q.entropy >= th.uniform * q.ln_k && q.loss >= th.uniform * q.ln_k) {
            Some((
                Symptom::UniformCollapse,
                format!(
                    "over the last {} iterations the teacher entropy stayed at {:.3} and the loss at {:.3}, \
                     against ln K = {:.3}: the teacher's outputs are uniform",
                    p.iteration - start + 1,
                    p.entropy,
                    p.loss,
                    p.ln_k
                ),
            ))
        } else if all(&|q| q.mean_entropy <= th.one_dim * q.ln_k) {
            Some((
                Symptom::OneDimensionCollapse,
                format!(
                    "over the last {} iterations the entropy of the batch-mean teacher output stayed below {:.3} \
                     (now {:.3}; ln K = {:.3}, teacher entropy {:.3}): every image goes to the same few of the \
                     K dimensions",
                    p.iteration - start + 1,
                    th.one_dim * p.ln_k,
                    p.mean_entropy,
                    p.ln_k,
                    p.entropy
                ),
            ))
        } else if p.iteration >= th.stall_after && self.lowest_mean > (1.0 - th.stall_drop) * first {
            Some((
                Symptom::Stalled,
                format!(
                    "after {} iterations no {}-iteration mean of the loss fell {:.0}% below the first one \
                     ({first:.3}; the lowest was {:.3}, ln K = {:.3})",
                    p.iteration,
                    th.window,
                    th.stall_drop * 100.0,
                    self.lowest_mean,
                    p.ln_k
                ),
            ))
        } else {
            None
        };
        let (symptom, seen) = found?;
        if self.raised.contains(&symptom) {
            return None;
        }
        self.raised.push(symptom);
        Some(Alert {
            symptom,
            epoch: r.epoch,
            iteration: r.iteration,
            seen,
            advice: symptom.advice().iter().map(|s| s.to_string()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step record of a run with ln K = ln 1024.
    fn rec(iteration: usize, loss: f64, entropy: f64, mean_entropy: f64) -> StepRecord {
        let ln_k = 1024f64.ln();
        StepRecord {
            epoch: iteration / 100,
            iteration,
            loss,
            ln_k,
            teacher_entropy: entropy,
            teacher_mean_entropy: mean_entropy,
            kl_uniform: ln_k - entropy,
            lr: 1e-4,
            wd: 0.04,
            momentum: 0.996,
            teacher_temp: 0.04,
            grad_norm: 1.0,
            koleo: None,
            ibot: None,
            images_per_s: 50.0,
            elapsed_s: iteration as f64,
        }
    }

    /// Feed `f(iteration)` every `every` iterations up to `n`; the alerts raised.
    fn run(n: usize, every: usize, f: impl Fn(usize) -> StepRecord) -> Vec<Alert> {
        let mut m = Monitor::new(Thresholds::default());
        (0..n).step_by(every).filter_map(|i| m.observe(&f(i))).collect()
    }

    /// A healthy run: the loss falls well below its start, sharp teacher, diverse mean.
    fn healthy(i: usize) -> StepRecord {
        let wobble = if i % 2 == 0 { 0.2 } else { -0.2 };
        rec(i, 6.2 - 1.5 * (i as f64 / 1000.0) + wobble, 4.5 + wobble, 6.0)
    }

    #[test]
    fn a_healthy_run_raises_nothing() {
        assert_eq!(run(2000, 1, healthy), vec![]);
        assert_eq!(run(2000, 10, healthy), vec![]);
    }

    #[test]
    fn a_uniform_teacher_with_the_loss_at_ln_k_is_a_uniform_collapse_once_the_window_is_full() {
        let ln_k = 1024f64.ln();
        let a = run(1000, 1, |i| rec(i, ln_k + 0.01, ln_k - 0.001, ln_k));
        assert_eq!(a.len(), 1, "raised once: {a:?}");
        assert_eq!(a[0].symptom, Symptom::UniformCollapse);
        assert!((89..=100).contains(&a[0].iteration), "after a whole window, not before: {}", a[0].iteration);
        assert!(a[0].message().contains("--teacher-temp"), "{}", a[0].message());
        // one record in the window that is not uniform keeps it from being raised
        let a = run(1000, 1, |i| rec(i, ln_k, if i % 50 == 7 { 0.5 * ln_k } else { ln_k }, ln_k));
        assert!(a.iter().all(|a| a.symptom != Symptom::UniformCollapse), "{a:?}");
    }

    #[test]
    fn a_uniform_teacher_alone_is_not_a_collapse_when_the_loss_is_low() {
        // the student fits a flat teacher (early training can look like this for a moment)
        let ln_k = 1024f64.ln();
        let a = run(240, 1, |i| rec(i, 0.5 * ln_k, 0.99 * ln_k, ln_k));
        assert_eq!(a, vec![]);
    }

    #[test]
    fn a_batch_mean_on_one_dimension_is_a_one_dimension_collapse() {
        let a = run(1000, 10, |i| rec(i, 0.05, 0.01, 0.2));
        assert_eq!(a.iter().map(|a| a.symptom).collect::<Vec<_>>(), [Symptom::OneDimensionCollapse]);
        assert!(a[0].message().contains("--center-momentum"), "{}", a[0].message());
        // above the threshold (0.1 ln K = 0.69 nats: about two prototypes) it is not raised
        assert_eq!(run(1000, 10, |i| rec(i, 0.05 * (1000 - i) as f64, 0.01, 0.75)), vec![]);
    }

    #[test]
    fn a_loss_that_never_falls_from_its_start_is_a_stall_after_the_grace_period() {
        let a = run(1000, 1, |i| rec(i, 6.0 + if i % 3 == 0 { 0.1 } else { -0.05 }, 4.0, 6.0));
        assert_eq!(a.iter().map(|a| a.symptom).collect::<Vec<_>>(), [Symptom::Stalled]);
        assert_eq!(a[0].iteration, Thresholds::default().stall_after);
        // a loss that rose during the warmup and came down below its first window is no stall
        assert_eq!(run(1000, 1, |i| rec(i, if i < 100 { 6.0 + i as f64 / 100.0 } else { 5.9 }, 4.0, 6.0)), vec![]);
    }

    #[test]
    fn too_few_records_in_a_window_raise_nothing() {
        // logged every 30 iterations: a window of 100 holds 3-4 records, fewer than 5
        let ln_k = 1024f64.ln();
        assert_eq!(run(3000, 30, |i| rec(i, ln_k, ln_k, ln_k)), vec![]);
    }

    #[test]
    fn a_sparse_log_widens_the_window_to_hold_enough_records() {
        assert_eq!(Thresholds::for_log_every(10), Thresholds::default());
        let t = Thresholds::for_log_every(50);
        assert_eq!((t.window, t.stall_after), (250, 625));
        let ln_k = 1024f64.ln();
        let mut m = Monitor::new(t);
        let a: Vec<Alert> = (0..3000).step_by(50).filter_map(|i| m.observe(&rec(i, ln_k, ln_k, ln_k))).collect();
        assert_eq!(a.iter().map(|a| a.symptom).collect::<Vec<_>>(), [Symptom::UniformCollapse]);
    }

    #[test]
    fn a_replayed_log_raises_the_same_alerts_at_the_same_iterations() {
        let ln_k = 1024f64.ln();
        let f = |i: usize| if i < 400 { healthy(i) } else { rec(i, ln_k, ln_k, ln_k) };
        let whole = run(1000, 1, f);
        // the first 600 records replayed (a resume), then the rest observed
        let mut m = Monitor::new(Thresholds::default());
        let replayed: Vec<Alert> = (0..600).filter_map(|i| m.observe(&f(i))).collect();
        let after: Vec<Alert> = (600..1000).filter_map(|i| m.observe(&f(i))).collect();
        assert_eq!([replayed, after].concat(), whole);
        assert_eq!(m.raised(), [Symptom::UniformCollapse]);
    }
}
