//! One test per rule of DINOv2's optimizer path (`dino!`'s `layer_decay`, `patch_embed_lr`,
//! `clip_grad: N per module`, `freeze_last_layer: N epochs zero_lr`), each on the compiled
//! step of a tiny objective and each able to fail if the rule were implemented the obvious
//! wrong way. (All of it together against PyTorch: `dino_step_parity.rs`'s
//! `dinov2_steps_optim`, and `optimizer_parity.rs`'s `*_dinov2` cases.)
mod common;
#[path = "common/rule_dino.rs"]
mod rule_dino;

use common::splitmix::uniform;
use dino::device::{test_executor, TestExecutor};
use dino::runtime::backend::Passes;
use dino::runtime::config::{ClipScope, DinoConfig, FreezeRule, OptimizerName};
use dino::runtime::dino::{DinoStep, StepHyper};
use dino::runtime::graph::data;
use rule_dino::{student, RuleDino};

type Weights = Vec<(String, Vec<f32>)>;

/// The student before and after one step of `RuleDino` with overrides (seed-0 weights, the
/// same crops every time), and the step itself.
fn one_step(change: impl Fn(&mut DinoConfig), h: StepHyper) -> (Weights, Weights, DinoStep<RuleDino>) {
    let mut cfg = RuleDino::CONFIG;
    change(&mut cfg);
    let mut s = DinoStep::<RuleDino>::build_with(cfg, 3).unwrap();
    s.init(0);
    s.compile(Passes::default());
    let mut rt: TestExecutor = test_executor(&s.train.cx);
    let before = student(&s);
    let (ng, nl) = s.crop_sizes();
    s.set_batch(uniform(1, 0, ng), uniform(2, 0, nl)).unwrap();
    s.set_hyper(&h);
    rt.execute_to_host(&mut s.train.cx).unwrap();
    s.outputs().unwrap();
    s.advance();
    (before, student(&s), s)
}

fn sgd(c: &mut DinoConfig) {
    c.optimizer.kind = OptimizerName::Sgd;
    c.optimizer.momentum = 0.0;
}

fn hyper(freeze: bool) -> StepHyper {
    StepHyper { lr: 1.0, weight_decay: 0.0, momentum: 0.9, teacher_temp: 0.04, freeze_last_layer: freeze }
}

/// `before - after` per tensor: with SGD at lr 1 and no decay, the (scaled) gradient.
fn updates(before: &Weights, after: &Weights) -> Vec<(String, Vec<f64>)> {
    before
        .iter()
        .zip(after)
        .map(|((n, a), (_, b))| (n.clone(), a.iter().zip(b).map(|(x, y)| (*x - *y) as f64).collect()))
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[test]
fn layer_decay_and_patch_embed_lr_scale_each_tensors_update() {
    let (b0, a0, _) = one_step(sgd, hyper(false));
    let (b1, a1, _) = one_step(
        |c| {
            sgd(c);
            c.optimizer.layer_decay = 0.5;
            c.optimizer.patch_embed_lr = 0.2;
        },
        hyper(false),
    );
    // depth 2: embeddings 0.5^3 (patch embedding x 0.2), block 0 0.5^2, block 1 0.5, rest 1
    let want = |n: &str| match n {
        _ if n.starts_with("backbone.patch_embed") => 0.125 * 0.2,
        "backbone.cls_token" | "backbone.pos_embed" => 0.125,
        _ if n.starts_with("backbone.blocks.0.") => 0.25,
        _ if n.starts_with("backbone.blocks.1.") => 0.5,
        _ => 1.0,
    };
    let mut seen = std::collections::BTreeSet::new();
    for ((name, full), (_, scaled)) in updates(&b0, &a0).iter().zip(&updates(&b1, &a1)) {
        let m = want(name);
        for (f, s) in full.iter().zip(scaled) {
            assert!((s - m * f).abs() <= 1e-7 + 1e-4 * (m * f).abs(), "{name}: {s} vs {m} x {f}");
        }
        if norm(full) > 0.0 {
            seen.insert(format!("{m}"));
        }
    }
    assert_eq!(seen.len(), 5, "every multiplier is exercised: {seen:?}");
}

#[test]
fn clipping_per_module_scales_a_whole_module_by_one_factor() {
    let (b0, a0, _) = one_step(sgd, hyper(false));
    let clip = 0.05;
    let (b1, a1, _) = one_step(
        |c| {
            sgd(c);
            c.clip_grad = clip;
            c.clip_scope = ClipScope::Module;
        },
        hyper(false),
    );
    let (full, clipped) = (updates(&b0, &a0), updates(&b1, &a1));
    for module in ["backbone", "head"] {
        let of = |u: &Vec<(String, Vec<f64>)>| -> Vec<f64> {
            u.iter().filter(|(n, _)| n.starts_with(&format!("{module}."))).flat_map(|(_, v)| v.clone()).collect()
        };
        let (g, c) = (of(&full), of(&clipped));
        // DINOv2 (clip_grad_norm_ per module): min(1, clip / (module norm + 1e-6))
        let factor = (clip / (norm(&g) + 1e-6)).min(1.0);
        assert!(factor < 0.5, "{module}: the test needs clipping to bite ({factor})");
        for (x, y) in g.iter().zip(&c) {
            // within f32 rounding of weights near 1 (the update is a difference of weights)
            assert!((y - factor * x).abs() <= 2e-7 + 1e-3 * (factor * x).abs(), "{module}: {y} vs {factor} x {x}");
        }
    }
}

#[test]
fn a_zero_lr_freeze_keeps_the_weights_and_moves_the_moments() {
    let h = StepHyper { lr: 1e-2, weight_decay: 0.04, ..hyper(true) };
    for rule in [FreezeRule::Skip, FreezeRule::ZeroLr] {
        let (before, after, s) = one_step(|c| c.freeze_rule = rule, h);
        for ((name, a), (_, b)) in before.iter().zip(&after) {
            if name.contains("last_layer") {
                assert_eq!(a, b, "{name} is frozen ({rule:?})");
            } else {
                assert_ne!(a, b, "{name} trains");
            }
        }
        for (name, id, _) in s.train.optimizer.state_names().into_iter().filter(|n| n.0.contains("last_layer")) {
            let moved = data::get(&s.train.cx, id).unwrap().iter().any(|v| *v != 0.0);
            // DINO skips the frozen layer; DINOv2 steps it at lr 0, so its moments move
            assert_eq!(moved, rule == FreezeRule::ZeroLr, "{name} under {rule:?}");
        }
        let g = s.train.optimizer.groups.iter().find(|g| g.name == "last_layer").unwrap();
        assert_eq!(g.steps, (rule == FreezeRule::ZeroLr) as u64, "the frozen group's step count under {rule:?}");
    }
}

#[test]
fn bad_multipliers_are_refused_by_name() {
    for (what, change) in [
        ("--layer-decay", (|c: &mut DinoConfig| c.optimizer.layer_decay = 1.5) as fn(&mut DinoConfig)),
        ("--layer-decay", |c: &mut DinoConfig| c.optimizer.layer_decay = f64::NAN),
        ("--patch-embed-lr", |c: &mut DinoConfig| c.optimizer.patch_embed_lr = 0.0),
    ] {
        let mut cfg = RuleDino::CONFIG;
        change(&mut cfg);
        let e = DinoStep::<RuleDino>::build_with(cfg, 2).err().expect("refused").to_string();
        assert!(e.contains(what) && e.contains("(0, 1]"), "{e}");
    }
}
