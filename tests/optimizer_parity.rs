//! Six optimizer steps of a small MLP equal `torch.optim.AdamW` / `torch.optim.SGD` with the
//! same hyperparameters (fixtures from `tests/reference/make_fixtures.py`): lr and weight
//! decay change every step, weight decay applies only to >1-D parameters, gradients are
//! clipped per parameter at 0.5, and `fc2.weight` is frozen for the first two steps (skipped,
//! with its own step count afterwards).
//!
//! The `*_dinov2` fixtures take DINOv2's optimizer path instead: each module clipped as a
//! whole (`clip_grad_norm_` on fc1 and fc2), constant lr multipliers per parameter, and
//! `fc2.weight` frozen by an lr of 0 (its moments or momentum buffer and step count move on).
//!
//! Tolerance: loss and every parameter after every step within `1e-5 + 1e-4 * |torch|`,
//! uncompiled and compiled by the CPU backend.
mod common;

use common::{assert_close, fixture, tensor};
use dino::device::test_executor;
use dino::runtime::autograd::backward;
use dino::runtime::backend::Passes;
use dino::runtime::graph::{data, Handles};
use dino::runtime::nn::{gelu, log_softmax, Linear, ParamSet, ParamVisitor, Parameters};
use dino::runtime::optim::{
    AdamWConfig, Clip, ClipScope, FreezeRule, Optimizer, OptimizerKind, OptimizerSpec, SgdConfig,
};
use luminal::prelude::*;

struct TinyMlp {
    fc1: Linear<5, 7>,
    fc2: Linear<7, 3>,
}

impl Parameters for TinyMlp {
    fn visit(&self, v: &mut ParamVisitor) {
        v.module("fc1", &self.fc1);
        v.module("fc2", &self.fc2);
    }
}

fn run(name: &str, kind: OptimizerKind, compiled: bool) {
    let f = fixture(name);
    let mut cx = Box::new(Graph::new());
    let model = TinyMlp { fc1: Linear::new(&mut cx, true), fc2: Linear::new(&mut cx, true) };
    let x = cx.named_tensor::<R2<4, 5>>("x");
    let y = cx.named_tensor::<R2<4, 3>>("y");
    let logits = model.fc2.forward(gelu(model.fc1.forward(x)));
    // cross-entropy with one-hot targets, mean over the batch
    let loss = (log_softmax(logits) * y).sum_reduce::<R0, Axes2<0, 1>>() * (-1.0 / 4.0);
    let params = ParamSet::of(&model, &mut cx);
    let grads = backward(&mut cx, loss.id, &params.ids()).unwrap();
    // the fixture's optimizer path: DINO's, or DINOv2's (metadata `clip_per`, `freeze`, `lr_mult`)
    let dinov2 = f.metadata.get("freeze").map(String::as_str) == Some("zero_lr");
    let mults: Vec<(String, f32)> = f
        .metadata
        .get("lr_mult")
        .map(|m| {
            m.split(',').map(|kv| kv.split_once(':').unwrap()).map(|(k, v)| (k.into(), v.parse().unwrap())).collect()
        })
        .unwrap_or_default();
    let lr_mult = |n: &str| mults.iter().find(|(k, _)| k == n).map_or(1.0, |m| m.1);
    let spec = OptimizerSpec {
        kind,
        clip: Some(Clip { max_norm: 0.5, scope: if dinov2 { ClipScope::Module } else { ClipScope::Parameter } }),
        groups: &["default", "last"],
        group_of: &|n| (n == "fc2.weight") as usize,
        lr_mult: &lr_mult,
        freeze: if dinov2 { FreezeRule::ZeroLr } else { FreezeRule::Skip },
    };
    let mut opt = Optimizer::build(&mut cx, &params, &grads, &spec).unwrap();
    cx.no_delete.insert(loss.id);
    let mut handles = Handles(vec![loss.id]);
    for p in &params.params {
        params.set(&mut cx, &p.name, tensor(&f, &format!("init.{}", p.name)).data.clone()).unwrap();
    }
    opt.init_state(&mut cx);
    let mut rt = None;
    if compiled {
        cx.compile(Passes::default(), (&mut opt, &mut handles));
        rt = Some(test_executor(&cx));
    }
    let steps: usize = f.metadata["steps"].parse().unwrap();
    let tag = format!("{name} {}", if compiled { "compiled" } else { "uncompiled" });
    for s in 0..steps {
        data::set(&mut cx, x.id, tensor(&f, &format!("step{s}.x")).data.clone());
        data::set(&mut cx, y.id, tensor(&f, &format!("step{s}.y")).data.clone());
        opt.group_mut("last").unwrap().frozen = s < 2;
        let (lr, wd) = (tensor(&f, &format!("step{s}.lr")).data[0], tensor(&f, &format!("step{s}.wd")).data[0]);
        opt.pre_step(&mut cx, lr, wd);
        match rt.as_mut() {
            Some(rt) => rt.execute_to_host(&mut cx).unwrap(),
            None => cx.execute(),
        }
        let l = data::take(&mut cx, handles.0[0]).unwrap();
        assert_close(&format!("{tag} step {s} loss"), &l, &tensor(&f, &format!("step{s}.loss")).data, 1e-5, 1e-4);
        assert!(opt.take_grad_norm(&mut cx).unwrap() > 0.0);
        opt.post_step(&mut cx);
        for p in &params.params {
            let got = params.values(&cx, &p.name).unwrap();
            assert_close(
                &format!("{tag} step {s} {}", p.name),
                got,
                &tensor(&f, &format!("step{s}.{}", p.name)).data,
                1e-5,
                1e-4,
            );
        }
    }
    if dinov2 {
        assert_eq!(opt.groups[1].steps as usize, steps, "a group frozen by lr 0 still counts its steps");
    } else {
        assert_eq!(opt.groups[1].steps as usize, steps - 2, "the frozen group counts only its own updates");
    }
}

#[test]
fn adamw_matches_torch() {
    let kind = OptimizerKind::AdamW(AdamWConfig::default());
    run("adamw_steps", kind, false);
    run("adamw_steps", kind, true);
}

#[test]
fn sgd_matches_torch() {
    let kind = OptimizerKind::Sgd(SgdConfig { momentum: 0.9 });
    run("sgd_steps", kind, false);
    run("sgd_steps", kind, true);
}

#[test]
fn adamw_matches_torch_on_dinov2s_path() {
    let kind = OptimizerKind::AdamW(AdamWConfig::default());
    run("adamw_steps_dinov2", kind, false);
    run("adamw_steps_dinov2", kind, true);
}

#[test]
fn sgd_matches_torch_on_dinov2s_path() {
    let kind = OptimizerKind::Sgd(SgdConfig { momentum: 0.9 });
    run("sgd_steps_dinov2", kind, false);
    run("sgd_steps_dinov2", kind, true);
}
