//! One test per easy-to-miss rule of DINO's training step (STYLE.md item 18), each on the
//! compiled step of a tiny objective, each able to fail if the rule were implemented the
//! obvious wrong way: per-parameter (not global) clipping, no weight decay on biases and
//! norm weights, the last-layer freeze, the teacher fed only global crops, and the center
//! updated from the raw teacher outputs after the loss. (Same-view pairs: `dino::loss` unit
//! tests; all of it together against PyTorch: `dino_step_parity.rs`. DINOv2's optimizer rules:
//! `dinov2_optimizer_rules.rs`, on the same objective, `common/rule_dino.rs`.)
mod common;
#[path = "common/rule_dino.rs"]
mod rule_dino;

use common::splitmix::uniform;
use dino::device::{test_executor, TestExecutor};
use dino::runtime::backend::Passes;
use dino::runtime::config::DinoConfig;
use dino::runtime::dino::{DinoStep, StepHyper, StepOutputs};
use dino::runtime::graph::data;
use rule_dino::{student, RuleDino};

const BATCH: usize = 3;

/// A compiled step of `RuleDino` with overrides, weights from seed 0.
fn step(change: impl Fn(&mut DinoConfig)) -> (DinoStep<RuleDino>, TestExecutor) {
    let mut cfg = RuleDino::CONFIG;
    change(&mut cfg);
    let mut s = DinoStep::<RuleDino>::build_with(cfg, BATCH).unwrap();
    s.init(0);
    s.compile(Passes::default());
    let rt = test_executor(&s.train.cx);
    (s, rt)
}

fn hyper(lr: f64, wd: f64, freeze: bool) -> StepHyper {
    StepHyper { lr, weight_decay: wd, momentum: 0.9, teacher_temp: 0.04, freeze_last_layer: freeze }
}

/// Run one step on crops from `seeds` (global, local).
fn run(s: &mut DinoStep<RuleDino>, rt: &mut TestExecutor, seeds: (u64, u64), h: StepHyper) -> StepOutputs {
    let (ng, nl) = s.crop_sizes();
    s.set_batch(uniform(seeds.0, 0, ng), uniform(seeds.1, 0, nl)).unwrap();
    s.set_hyper(&h);
    rt.execute_to_host(&mut s.train.cx).unwrap();
    let out = s.outputs().unwrap();
    s.advance();
    out
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn gradient_clipping_is_per_parameter() {
    let sgd = |clip: f64| {
        move |c: &mut DinoConfig| {
            c.optimizer.kind = dino::runtime::config::OptimizerName::Sgd;
            c.optimizer.momentum = 0.0;
            c.clip_grad = clip;
        }
    };
    // lr 1, no decay: the first SGD update is minus the (clipped) gradient
    let (mut free, mut rt) = step(sgd(0.0));
    let w0 = student(&free);
    run(&mut free, &mut rt, (1, 2), hyper(1.0, 0.0, false));
    let clip = 0.02;
    let (mut clipped, mut rt) = step(sgd(clip));
    run(&mut clipped, &mut rt, (1, 2), hyper(1.0, 0.0, false));
    let (g, c) = (student(&free), student(&clipped));
    let mut factors = vec![];
    for ((name, w), ((_, gw), (_, cw))) in w0.iter().zip(g.iter().zip(&c)) {
        let grad: Vec<f32> = w.iter().zip(gw).map(|(a, b)| a - b).collect();
        let upd: Vec<f32> = w.iter().zip(cw).map(|(a, b)| a - b).collect();
        let gn = norm(&grad);
        // DINO: each tensor's gradient scaled by min(1, clip / (its norm + 1e-6))
        let factor = (clip / (gn + 1e-6)).min(1.0);
        for (u, gr) in upd.iter().zip(&grad) {
            assert!((*u as f64 - factor * *gr as f64).abs() <= 1e-6 + 1e-3 * (factor * *gr as f64).abs(), "{name}");
        }
        if gn > 0.0 {
            factors.push(factor);
        }
    }
    let clipped_count = factors.iter().filter(|f| **f < 1.0).count();
    assert!(clipped_count > 3 && clipped_count < factors.len(), "some tensors clipped, some not: {factors:?}");
    let distinct = factors.iter().filter(|f| (**f - factors[0]).abs() > 1e-3).count();
    assert!(distinct > 0, "a global clip would scale every tensor by one factor");
}

#[test]
fn weight_decay_skips_biases_and_one_dimensional_parameters() {
    let (mut a, mut rt_a) = step(|_| {});
    let w0 = student(&a);
    run(&mut a, &mut rt_a, (3, 4), hyper(1e-2, 0.0, false));
    let (mut b, mut rt_b) = step(|_| {});
    run(&mut b, &mut rt_b, (3, 4), hyper(1e-2, 0.5, false));
    let mut decayed = vec![];
    for ((name, w), ((_, wa), (_, wb))) in w0.iter().zip(student(&a).iter().zip(&student(&b))) {
        // AdamW: the decay term is -lr * wd * w, added to the same Adam update
        let diff: Vec<f64> = wa.iter().zip(wb).map(|(x, y)| (*x - *y) as f64).collect();
        let shape = &a.student_params.get(name).unwrap().shape;
        let should = shape.len() > 1 && !name.ends_with(".bias");
        if should {
            for (d, w) in diff.iter().zip(w) {
                assert!((d - 1e-2 * 0.5 * *w as f64).abs() < 2e-6, "{name} must decay");
            }
            decayed.push(name.clone());
        } else {
            assert!(diff.iter().all(|d| *d == 0.0), "{name} ({shape:?}) must not decay");
        }
    }
    for must in
        ["backbone.cls_token", "backbone.pos_embed", "head.last_layer.weight_g", "backbone.blocks.0.attn.qkv.weight"]
    {
        assert!(decayed.iter().any(|n| n == must), "{must} decays in DINO (more than one dimension)");
    }
}

#[test]
fn last_layer_is_frozen_in_the_first_epochs_only() {
    let (mut s, mut rt) = step(|_| {});
    let w0 = student(&s);
    run(&mut s, &mut rt, (5, 6), hyper(1e-2, 0.04, true));
    let w1 = student(&s);
    for ((name, a), (_, b)) in w0.iter().zip(&w1) {
        if name.contains("last_layer") {
            assert_eq!(a, b, "{name} frozen");
        } else {
            assert_ne!(a, b, "{name} trains");
        }
    }
    // its optimizer state was left untouched: it starts fresh when unfrozen
    for (name, id, _) in s.train.optimizer.state_names() {
        if name.contains("last_layer") {
            assert!(data::get(&s.train.cx, id).unwrap().iter().all(|v| *v == 0.0), "{name} untouched while frozen");
        }
    }
    run(&mut s, &mut rt, (7, 8), hyper(1e-2, 0.04, false));
    for ((name, a), (_, b)) in w1.iter().zip(&student(&s)) {
        if name.contains("last_layer") {
            assert_ne!(a, b, "{name} trains after the freeze");
        }
    }
}

#[test]
fn teacher_sees_only_the_global_crops() {
    let outputs = |seeds: (u64, u64)| {
        let (mut s, mut rt) = step(|_| {});
        let out = run(&mut s, &mut rt, seeds, hyper(1e-3, 0.04, false));
        let center = data::get(&s.train.cx, s.center).unwrap().to_vec();
        (out, center)
    };
    let (base, c_base) = outputs((9, 10));
    let (other_local, c_local) = outputs((9, 11));
    let (other_global, c_global) = outputs((12, 10));
    // the center is the teacher's: local crops cannot move it, global crops do
    assert_eq!(c_base, c_local);
    assert_eq!(base.teacher_entropy, other_local.teacher_entropy);
    assert_ne!(c_base, c_global);
    // while the student (and so the loss) sees the local crops
    assert_ne!(base.loss, other_local.loss);
    assert_ne!(base.loss, other_global.loss);
}

#[test]
fn center_moves_after_the_loss_from_raw_teacher_outputs() {
    let (mut s, mut rt) = step(|_| {});
    let (ng, nl) = s.crop_sizes();
    let once = |s: &mut DinoStep<RuleDino>, rt: &mut TestExecutor, center: Vec<f32>| {
        s.set_batch(uniform(13, 0, ng), uniform(14, 0, nl)).unwrap();
        data::set(&mut s.train.cx, s.center, center);
        // lr 0 and momentum 1: weights and teacher stay, so runs are comparable
        s.set_hyper(&StepHyper { momentum: 1.0, ..hyper(0.0, 0.0, false) });
        rt.execute_to_host(&mut s.train.cx).unwrap();
        let out = s.outputs().unwrap();
        s.advance();
        (out.loss, data::get(&s.train.cx, s.center).unwrap().to_vec())
    };
    let (loss_0, c1) = once(&mut s, &mut rt, vec![0.0; 12]);
    let (loss_0_again, c1_again) = once(&mut s, &mut rt, vec![0.0; 12]);
    assert_eq!((loss_0, &c1), (loss_0_again, &c1_again), "deterministic");
    let (loss_1, c2) = once(&mut s, &mut rt, c1.clone());
    // c' = 0.9 c + 0.1 mean(teacher): from zero, c1 = 0.1 mean; from c1, c2 = 0.9 c1 + 0.1 mean
    // = 1.9 c1 -- the raw teacher outputs, not the centered ones (those would give c2 = c1)
    for (a, b) in c2.iter().zip(&c1) {
        assert!((a - 1.9 * b).abs() <= 1e-5 + 1e-4 * b.abs(), "{a} vs 1.9 * {b}");
    }
    // the loss of a step uses the center it was given, not the one it produces
    assert_ne!(loss_0, loss_1);
}

dino::vit! {
    pub RegVit { image: 8, patch: 4, channels: 1, dim: 8, depth: 2, heads: 2, mlp: 16, layer_scale: 0.1, registers: 2 }
}

dino::dino! {
    pub RegDino for RegVit {
        head: { hidden: 16, bottleneck: 8, out: 12, layers: 3, norm_last_layer: false },
        crops: { global: 2 x 8 scale 0.4..1.0, local: 2 x 4 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
        teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4, warmup: 0 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 0.0, freeze_last_layer: 1 epochs,
        augment: { normalize: mean [0.5] std [0.5] },
    }
}

/// DINOv2's backbone options train like the rest: a step of an objective whose backbone has
/// registers and LayerScale moves both (their gradients reach them through the graph), and
/// the teacher, fed only global crops, has them too.
#[test]
fn registers_and_layer_scale_are_trained() {
    let mut s = DinoStep::<RegDino>::build_with(RegDino::CONFIG, BATCH).unwrap();
    s.init(0);
    s.compile(Passes::default());
    let mut rt = test_executor(&s.train.cx);
    let names = ["backbone.register_tokens", "backbone.blocks.1.ls1.gamma", "backbone.blocks.0.ls2.gamma"];
    let value = |s: &DinoStep<RegDino>, n: &str| s.student_params.values(&s.train.cx, n).unwrap().to_vec();
    let before: Vec<_> = names.iter().map(|n| value(&s, n)).collect();
    assert!(before[1].iter().all(|g| *g == 0.1), "LayerScale starts at its declared value");
    let (ng, nl) = s.crop_sizes();
    for step in 0..2 {
        s.set_batch(uniform(10 + step, 0, ng), uniform(20 + step, 0, nl)).unwrap();
        s.set_hyper(&hyper(1e-2, 0.0, false));
        rt.execute_to_host(&mut s.train.cx).unwrap();
        let out = s.outputs().unwrap();
        assert!(out.loss.is_finite(), "step {step}: loss {}", out.loss);
        s.advance();
    }
    for (n, b) in names.iter().zip(&before) {
        let a = value(&s, n);
        let moved = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(moved > 1e-4, "{n} moved by {moved}");
    }
}

/// DINOv2's KoLeo, declared with a weight, is part of what the step minimizes and is logged
/// apart: from the same weights and crops the DINO loss is the same with and without it, the
/// objective is the DINO loss plus the weighted KoLeo term, and the backbone's update differs
/// (the term reaches it through the [CLS] features); without it nothing is reported.
#[test]
fn koleo_is_weighted_into_the_objective_and_reported_apart() {
    // plain SGD: updates proportional to the gradients (Adam's first step would hide them)
    let sgd = |c: &mut DinoConfig| {
        c.optimizer.kind = dino::runtime::config::OptimizerName::Sgd;
        c.optimizer.momentum = 0.0;
    };
    let (mut plain, mut rt0) = step(sgd);
    let (mut with, mut rt1) = step(|c| {
        sgd(c);
        c.koleo = 0.1
    });
    let h = hyper(0.1, 0.0, false);
    let (a, b) = (run(&mut plain, &mut rt0, (5, 6), h), run(&mut with, &mut rt1, (5, 6), h));
    eprintln!("without: {a:?}\nwith koleo 0.1: {b:?}");
    assert_eq!(a.koleo, None);
    assert_eq!(a.objective, a.loss);
    let k = b.koleo.expect("reported");
    assert!(k.is_finite() && k != 0.0, "{k}");
    assert!((b.loss - a.loss).abs() <= 1e-6 * a.loss.abs(), "{} vs {}", b.loss, a.loss);
    assert!((b.objective - (b.loss + 0.1 * k)).abs() <= 1e-5 * b.objective.abs(), "{b:?}");
    let (pa, pb) = (student(&plain), student(&with));
    let moved = |name: &str| {
        let (x, y) = (&pa.iter().find(|p| p.0 == name).unwrap().1, &pb.iter().find(|p| p.0 == name).unwrap().1);
        x.iter().zip(y.iter()).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max)
    };
    let (backbone, head) = (moved("backbone.blocks.0.attn.qkv.weight"), moved("head.last_layer.weight_v"));
    eprintln!("update differences: backbone {backbone:.2e}, head {head:.2e}");
    assert!(backbone > 1e-5, "{backbone}");
    // the head does not see KoLeo's gradient: it acts on the backbone's features
    assert!(head <= 1e-7, "{head}");
    let e = DinoStep::<RuleDino>::build_with(DinoConfig { koleo: 0.1, ..RuleDino::CONFIG }, 1).err().unwrap();
    assert!(e.to_string().contains("KoLeo"), "{e}");
}

/// `centering: sinkhorn_knopp(3)` (here through the config) replaces the centered softmax by
/// DINOv2's assignment: the loss changes, the teacher's targets are assignments (the entropy
/// of their batch mean is that of a uniform distribution over the prototypes, whatever the
/// center), and an iteration count outside 1..=100 is refused.
#[test]
fn sinkhorn_knopp_replaces_the_centered_softmax() {
    use dino::runtime::config::Centering;
    let (mut ema, mut rt0) = step(|_| {});
    let (mut sk, mut rt1) = step(|c| c.centering = Centering::SinkhornKnopp { iterations: 3 });
    let h = hyper(0.1, 0.0, false);
    let (a, b) = (run(&mut ema, &mut rt0, (5, 6), h), run(&mut sk, &mut rt1, (5, 6), h));
    eprintln!("ema: {a:?}\nsinkhorn-knopp: {b:?}");
    assert!(b.loss.is_finite() && (a.loss - b.loss).abs() > 1e-4, "{} vs {}", a.loss, b.loss);
    let ln_k = (RuleDino::CONFIG.head.out as f32).ln();
    assert!((b.teacher_mean_entropy - ln_k).abs() < 1e-3 * ln_k, "{} vs ln K {ln_k}", b.teacher_mean_entropy);
    let bad = DinoConfig { centering: Centering::SinkhornKnopp { iterations: 0 }, ..RuleDino::CONFIG };
    let e = DinoStep::<RuleDino>::build_with(bad, 2).err().unwrap().to_string();
    assert!(e.contains("--sinkhorn-knopp") && e.contains("1..=100"), "{e}");
}

dino::vit! {
    /// 12 px crops of 4 px patches: the 3 x 3 grid iBOT's masks need.
    pub RuleVit12 { image: 12, patch: 4, channels: 1, dim: 8, depth: 1, heads: 2, mlp: 16 }
}

dino::dino! {
    pub RuleIbot for RuleVit12 {
        head: { hidden: 16, bottleneck: 8, out: 12, layers: 3, norm_last_layer: false },
        crops: { global: 2 x 12 scale 0.4..1.0 },
        student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
        teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4, warmup: 0 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 0.0, freeze_last_layer: 1 epochs, ibot: {},
        augment: { normalize: mean [0.5] std [0.5] },
    }
}

/// iBOT's run-time rules: an objective compiled without iBOT cannot be given it (its networks
/// have no mask token) nor one with iBOT lose it; a batch whose global crops would never get a
/// mask, a mask ratio that masks no patch of the grid and a weight out of range are refused
/// by name. The masks drawn for a step follow DINOv2's collate (half the crops masked).
#[test]
fn ibot_is_refused_where_it_cannot_run() {
    use dino::runtime::config::IbotConfig;
    let err = |r: dino::runtime::error::Result<DinoStep<RuleIbot>>| r.err().expect("refused").to_string();
    let e = DinoStep::<RuleDino>::build_with(DinoConfig { ibot: Some(IbotConfig::DINOV2), ..RuleDino::CONFIG }, 2)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no mask token"), "{e}");
    let e = err(DinoStep::build_with(DinoConfig { ibot: None, ..RuleIbot::CONFIG }, 2));
    assert!(e.contains("built with iBOT"), "{e}");
    let with = |i: IbotConfig| DinoConfig { ibot: Some(i), ..RuleIbot::CONFIG };
    let e = err(DinoStep::build_with(with(IbotConfig { mask_probability: 0.2, ..IbotConfig::DINOV2 }), 1));
    assert!(e.contains("masks no crop") && e.contains("2 global crops"), "{e}");
    let e = err(DinoStep::build_with(with(IbotConfig { mask_ratio: (0.01, 0.1), ..IbotConfig::DINOV2 }), 2));
    assert!(e.contains("mask no patch") && e.contains("3 x 3"), "{e}");
    let e = err(DinoStep::build_with(with(IbotConfig { weight: -1.0, ..IbotConfig::DINOV2 }), 2));
    assert!(e.contains("--ibot-weight"), "{e}");

    let mut s = DinoStep::<RuleIbot>::build(4).unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    s.draw_ibot_masks(&mut rng);
    let i = s.ibot.clone().unwrap();
    let masks = data::get(&s.train.cx, i.masks).unwrap().to_vec();
    let masked_crops = masks.chunks(9).filter(|m| m.iter().any(|v| *v > 0.0)).count();
    assert_eq!(masked_crops, 4, "half of the 8 global crops: {masks:?}");
}

/// DINOv2's presets build as training steps (graph, autograd, optimizer; not run: a ViT-S/14
/// with K = 65536 does not train in CI): every parameter of the declaration is in the step,
/// and iBOT gathers DINOv2's `upperbound` of the 16 x 16 grid (2 images: 4 global crops, 2
/// masked, at most 76 + 128 patches).
#[test]
fn the_dinov2_presets_build_as_steps() {
    use dino::models::{Dinov2VitS14, Dinov2VitS14Reg4};
    let s = DinoStep::<Dinov2VitS14Reg4>::build(2).unwrap();
    let i = s.ibot.as_ref().expect("iBOT");
    assert_eq!((i.side, i.rows), (16, 76 + 128));
    assert_eq!(s.student_params.numel(), Dinov2VitS14Reg4::CONFIG.num_params());
    assert!(s.student_params.get("backbone.mask_token").is_some());
    assert!(s.student_params.get("backbone.register_tokens").is_some());
    let s = DinoStep::<Dinov2VitS14>::build(2).unwrap();
    assert_eq!(s.student_params.numel(), Dinov2VitS14::CONFIG.num_params());
}
