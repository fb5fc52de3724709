//! Compiled artifacts end to end: a step compiled once and run from its file trains exactly as
//! the step built at start (interrupted and resumed too), and a file built for something else,
//! damaged or altered is refused naming what is wrong, never run.
use std::path::{Path, PathBuf};

use dino::compiled::{compile_train_step, load_train_step, target};
use dino::train::{checkpoint, train_model, Device, Hyper, TrainOptions};
use dino_runtime::artifact::{Artifact, Target};
use proptest::prelude::*;

mod common;
use common::mini::subset_options;
use common::Scratch;

dino::vit! {
    /// A small ViT for 28x28 grayscale images, stochastic depth on.
    pub ArtVit { image: 28, patch: 7, channels: 1, dim: 24, depth: 2, heads: 2, mlp: 48, drop_path: 0.1 }
}

dino::dino! {
    /// DINO on ArtVit with local crops (their position embeddings are resampled by a constant
    /// the artifact carries).
    pub ArtDino for ArtVit {
        head: { hidden: 48, bottleneck: 16, out: 64, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 2 x 14 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
        teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 2, batch_size: 8,
        augment: {
            flip: 0.5, color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8, grayscale: off,
            blur: sigma 0.1..1.0 p [1.0, 0.1, 0.5] kernel 3, solarize: threshold 0.5 p 0.2,
            normalize: mean [0.2860] std [0.3530],
        },
    }
}

fn dir(name: &str) -> Scratch {
    Scratch::new(&format!("compiled-{name}"))
}

fn options(out: &Path, compiled: Option<PathBuf>, hyper: Hyper) -> TrainOptions {
    let mut o = subset_options("art", out, 4);
    (o.run.limit, o.run.hyper, o.compiled) = (Some(32), hyper, compiled);
    o
}

fn compile(path: &Path, hyper: &Hyper) {
    let cfg = hyper.apply(&ArtDino::CONFIG).unwrap();
    let r = compile_train_step::<ArtDino>("art", cfg, Target::Cpu, path).unwrap();
    assert!(r.kernels > 100 && r.bytes > 1000, "{r:?}");
}

fn tensors(run: &Path) -> Vec<(String, Vec<f32>)> {
    let (f, _) = checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    f.tensors.into_iter().map(|(k, t)| (k, t.data)).collect()
}

#[test]
fn a_compiled_step_trains_bit_for_bit_as_the_step_built_at_start() {
    let d = dir("same");
    let art = d.join("art.dart");
    compile(&art, &Hyper::default());
    let jit = train_model::<ArtDino>(&options(&d.join("jit"), None, Hyper::default())).unwrap();
    let comp = train_model::<ArtDino>(&options(&d.join("comp"), Some(art.clone()), Hyper::default())).unwrap();
    assert_eq!(jit.iterations, 8);
    assert_eq!(comp.losses, jit.losses, "every loss");
    assert_eq!(tensors(&d.join("comp")), tensors(&d.join("jit")), "student, teacher, center, optimizer state");
    // interrupted after 3 iterations, resumed from the same artifact
    let parts = d.join("parts");
    let first = TrainOptions { stop_after: Some(3), ..options(&parts, Some(art.clone()), Hyper::default()) };
    train_model::<ArtDino>(&first).unwrap();
    let again = TrainOptions { resume: true, ..options(&parts, Some(art.clone()), Hyper::default()) };
    let r = train_model::<ArtDino>(&again).unwrap();
    assert_eq!(r.losses[..], jit.losses[3..]);
    assert_eq!(tensors(&parts), tensors(&d.join("jit")));
    // what is fed every step may differ from the artifact's: another lr and schedule length
    let fed = Hyper { lr: Some(1e-3), epochs: Some(1), ..Default::default() };
    let r = train_model::<ArtDino>(&options(&d.join("fed"), Some(art), fed.clone())).unwrap();
    let want = train_model::<ArtDino>(&options(&d.join("fed-jit"), None, fed)).unwrap();
    assert_eq!(r.losses, want.losses);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_artifact_built_for_something_else_is_refused_by_name() {
    let d = dir("mismatch");
    let art = d.join("art.dart");
    compile(&art, &Hyper::default());
    let refuse = |hyper: Hyper, want: &[&str]| {
        let e = train_model::<ArtDino>(&options(&d.join("run"), Some(art.clone()), hyper)).err().expect("refused");
        let e = e.to_string();
        for w in want {
            assert!(e.contains(w), "{e}\nshould name {w}");
        }
        assert!(!d.join("run/checkpoint.safetensors").exists());
    };
    refuse(Hyper { batch_size: Some(4), ..Default::default() }, &["batch", "8", "4", "art.dart"]);
    refuse(Hyper { student_temp: Some(0.2), ..Default::default() }, &["student_temp", "0.1", "0.2"]);
    refuse(Hyper { local_crops_number: Some(3), ..Default::default() }, &["local_crops", "[2,14]", "[3,14]"]);
    // the objective's extra terms are part of the graph too
    refuse(Hyper { koleo: Some(0.1), ..Default::default() }, &["koleo", "0.0", "0.1"]);
    refuse(Hyper { sinkhorn_knopp: Some(3), ..Default::default() }, &["centering", "ema", "sinkhorn_knopp"]);
    let cfg = ArtDino::CONFIG;
    let e = load_train_step::<ArtDino>(&art, "fmnist-small", cfg, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("model") && e.contains("\"art\"") && e.contains("fmnist-small"), "{e}");
    let e = target(Device::Cpu, Some("sm_90")).unwrap_err().to_string();
    assert!(e.contains("--arch sm_90"), "{e}");
    // a GPU target needs its architecture named, and a build with the CUDA backend
    let e = target(Device::Cuda, None).unwrap_err().to_string();
    assert!(e.contains("--arch") && e.contains("sm_90") && e.contains("compute_cap"), "{e}");
    let e = target(Device::Cuda, Some("sm_90")).map_err(|e| e.to_string());
    if cfg!(feature = "cuda") {
        assert_eq!(e, Ok(Target::Cuda { arch: "sm_90".into() }));
        let e = target(Device::Cuda, Some("sm_90a")).unwrap_err().to_string();
        assert!(e.contains("sm_90a") && e.contains("suffix"), "{e}");
    } else {
        let e = e.unwrap_err();
        assert!(e.contains("--features cuda"), "{e}");
    }
    // a CPU plan asked for on a GPU
    let e = load_train_step::<ArtDino>(&art, "art", cfg, Device::Cuda).err().unwrap().to_string();
    assert!(e.contains("CPU plan") && e.contains("art.dart"), "{e}");
    // a GPU artifact (identity only) asked for on the CPU
    let mut a = Artifact::read(&art).unwrap();
    a.identity.target = Target::Cuda { arch: "sm_90".into() };
    a.write(&d.join("gpu.dart")).unwrap();
    let e = load_train_step::<ArtDino>(&d.join("gpu.dart"), "art", cfg, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("target cuda sm_90") && e.contains("asks for cpu"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn damaged_or_altered_artifacts_are_refused_before_anything_runs() {
    let d = dir("damaged");
    let art = d.join("art.dart");
    compile(&art, &Hyper::default());
    let bytes = std::fs::read(&art).unwrap();
    let cfg = ArtDino::CONFIG;
    let load = |b: &[u8]| {
        std::fs::write(d.join("x.dart"), b).unwrap();
        load_train_step::<ArtDino>(&d.join("x.dart"), "art", cfg, Device::Cpu).err().map(|e| e.to_string())
    };
    assert!(load(&bytes).is_none(), "the intact file loads");
    let e = load(&bytes[..bytes.len() * 2 / 3]).unwrap();
    assert!(e.contains("truncated") && e.contains("x.dart"), "{e}");
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 100] ^= 0x10;
    assert!(load(&flipped).unwrap().contains("fails its checksum"));
    assert!(load(b"PK\x03\x04 not this").unwrap().contains("not a dino artifact"));
    // an altered plan with checksums recomputed: caught by the plan's validation
    let a = Artifact::read(&art).unwrap();
    let mut plan = a.section("train-step.plan").unwrap().to_vec();
    let at = plan.len() / 2;
    plan[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut b = Artifact::read(&art).unwrap();
    b.add("train-step.plan", plan);
    b.write(&d.join("x.dart")).unwrap();
    let e = load_train_step::<ArtDino>(&d.join("x.dart"), "art", cfg, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("program `train-step`"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

fn artifact_bytes() -> &'static (Vec<u8>, Vec<u8>) {
    static BYTES: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let d = dir("fuzz");
        let art = d.join("art.dart");
        compile(&art, &Hyper::default());
        let b = std::fs::read(&art).unwrap();
        let plan = Artifact::read(&art).unwrap().section("train-step.plan").unwrap().to_vec();
        std::fs::remove_dir_all(&d).unwrap();
        (b, plan)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Changed bytes anywhere in the file: an error, never a panic.
    #[test]
    fn mutated_files_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut b = artifact_bytes().0.clone();
        for (at, v) in edits {
            let n = b.len();
            b[at % n] = v;
        }
        let _ = Artifact::parse(&b, Path::new("fuzz.dart")).map(|a| a.program("train-step").map(drop));
    }

    /// Changed bytes in the plan itself (as if the checksums were recomputed): the decoder and
    /// the validation refuse or accept, never panic; an accepted plan passed every check an
    /// executor relies on.
    #[test]
    fn mutated_plans_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut p = artifact_bytes().1.clone();
        for (at, v) in edits {
            let n = p.len();
            p[at % n] = v;
        }
        if let Ok(plan) = dino_runtime::backend::plan::Plan::from_bytes(&p) {
            prop_assert!(plan.validate().is_ok());
        }
    }
}
