//! CUDA artifacts (`dino compile --device cuda --arch sm_90`): the training step's kernels as
//! CUBIN and PTX beside its plan. Without a GPU (NVRTC alone compiles them): the file holds the
//! code for the architecture named, what it was built for is checked before a GPU is touched,
//! damage to the code is named, and a run without a GPU says so. With a GPU: the step run from
//! the file trains as the step built and compiled at start (`scripts/gpu-check.sh`).
#![cfg(feature = "cuda")]
use std::path::{Path, PathBuf};

use dino::compiled::{compile_forward, compile_train_step, load_forward, load_train_step, target, ForwardGraph};
use dino::train::{train_model, Device, TrainOptions};
use dino_runtime::artifact::{Artifact, Target};
use dino_runtime::backend::cuda::device::CudaLib;

mod common;
use common::mini::subset_options;
use common::Scratch;

dino::vit! {
    pub CuVit { image: 28, patch: 7, channels: 1, dim: 24, depth: 2, heads: 2, mlp: 48, drop_path: 0.1 }
}

dino::dino! {
    pub CuDino for CuVit {
        head: { hidden: 48, bottleneck: 16, out: 64, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 28 scale 0.4..1.0, local: 2 x 14 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
        teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4 per 256, warmup: 0.5 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 1 epochs, epochs: 2, batch_size: 8,
        augment: { flip: 0.5, normalize: mean [0.2860] std [0.3530] },
    }
}

fn dir(name: &str) -> Scratch {
    Scratch::new(&format!("cuda-art-{name}"))
}

fn options(out: &Path, compiled: Option<PathBuf>, device: Device) -> TrainOptions {
    let mut o = subset_options("cu", out, 4);
    (o.run.limit, o.compiled, o.device) = (Some(32), compiled, device);
    o
}

#[test]
fn a_cuda_artifact_holds_cubin_for_its_architecture_and_is_checked_before_a_gpu_runs_it() {
    if !CudaLib::Nvrtc.present() {
        eprintln!("SKIPPED, NVRTC not found: {}", CudaLib::Nvrtc.missing());
        return;
    }
    let d = dir("check");
    let art = d.join("cu.dart");
    let sm90 = target(Device::Cuda, Some("sm_90")).unwrap();
    assert_eq!(sm90, Target::Cuda { arch: "sm_90".into() });
    let r = compile_train_step::<CuDino>("cu", CuDino::CONFIG, sm90.clone(), &art).unwrap();
    let line = r.code.clone().expect("a line about the CUDA code");
    eprintln!("{line}");
    assert!(line.contains("sm_90 CUBIN") && line.contains("PTX"), "{line}");
    let a = Artifact::read(&art).unwrap();
    assert_eq!(a.identity.target, sm90);
    assert!(a.section_names().contains(&"train-step.code"), "{:?}", a.section_names());
    // a CPU plan is no GPU file, and a GPU file is no CPU plan
    let cfg = CuDino::CONFIG;
    let e = load_train_step::<CuDino>(&art, "cu", cfg, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("target cuda sm_90") && e.contains("asks for cpu"), "{e}");
    let cpu = d.join("cpu.dart");
    compile_train_step::<CuDino>("cu", cfg, Target::Cpu, &cpu).unwrap();
    let e = load_train_step::<CuDino>(&cpu, "cu", cfg, Device::Cuda).err().unwrap().to_string();
    assert!(e.contains("CPU plan") && e.contains("--device cuda --arch"), "{e}");
    // what the step was built for is compared before a GPU is opened
    let mut other = cfg;
    other.batch_size = 4;
    let e = load_train_step::<CuDino>(&art, "cu", other, Device::Cuda).err().unwrap().to_string();
    assert!(e.contains("batch") && e.contains('8') && e.contains('4'), "{e}");
    // damage to the code is named
    let bytes = std::fs::read(&art).unwrap();
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 10] ^= 1; // the code section is written last
    std::fs::write(d.join("x.dart"), &flipped).unwrap();
    let e = load_train_step::<CuDino>(&d.join("x.dart"), "cu", cfg, Device::Cuda).err().unwrap().to_string();
    assert!(e.contains("train-step.code") && e.contains("checksum"), "{e}");
    // a file without its code (a CPU program relabelled) is refused by name
    let mut bare = Artifact::read(&cpu).unwrap();
    bare.identity.target = sm90.clone();
    bare.write(&d.join("bare.dart")).unwrap();
    let e = load_train_step::<CuDino>(&d.join("bare.dart"), "cu", cfg, Device::Cuda).err().unwrap().to_string();
    assert!(e.contains("train-step.code"), "{e}");
    // a backbone's forward program carries its code too (`dino features --compiled`)
    let fwd = d.join("features.dart");
    let r = compile_forward::<CuVit>(ForwardGraph::Features, None, 4, 28, sm90.clone(), &fwd).unwrap();
    assert!(r.code.is_some_and(|c| c.contains("sm_90 CUBIN")));
    let a = Artifact::read(&fwd).unwrap();
    assert!(a.section_names().contains(&"features.code"), "{:?}", a.section_names());
    let e = load_forward::<CuVit>(&fwd, ForwardGraph::Features, None, 28, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("target cuda sm_90") && e.contains("asks for cpu"), "{e}");
    // the intact file: here without a GPU, a clear error; with one, it loads
    match load_train_step::<CuDino>(&art, "cu", cfg, Device::Cuda) {
        Ok(_) => eprintln!("loaded on the GPU"),
        Err(e) => {
            let e = e.to_string();
            eprintln!("no GPU here: {e}");
            assert!(e.contains("libcuda") || e.contains("GPU"), "{e}");
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// On a GPU: trained from the artifact (kernels loaded from CUBIN, no NVRTC) as from the
/// step built and compiled at start (kernels through NVRTC to PTX, then the driver).
#[test]
fn a_step_run_from_its_cuda_artifact_trains_as_the_step_built_at_start() {
    if let Err(e) = Device::Cuda.check() {
        eprintln!("CUDA artifact training: SKIPPED, no GPU here: {e}");
        return;
    }
    let d = dir("train");
    let art = d.join("cu.dart");
    let arch = std::env::var("DINO_TEST_ARCH").unwrap_or_else(|_| "sm_90".into());
    compile_train_step::<CuDino>("cu", CuDino::CONFIG, target(Device::Cuda, Some(&arch)).unwrap(), &art).unwrap();
    let jit = train_model::<CuDino>(&options(&d.join("jit"), None, Device::Cuda)).unwrap();
    let comp = train_model::<CuDino>(&options(&d.join("comp"), Some(art), Device::Cuda)).unwrap();
    assert_eq!(comp.iterations, jit.iterations);
    let worst = jit.losses.iter().zip(&comp.losses).fold(0f32, |m, ((i, a), (j, b))| {
        assert_eq!(i, j, "the same iterations");
        m.max((a - b).abs() / (1.0 + a.abs()))
    });
    eprintln!(
        "losses from the artifact vs JIT: worst relative difference {worst:.2e} ({})",
        if comp.losses == jit.losses { "bit for bit" } else { "not bit for bit" }
    );
    assert!(worst <= 1e-5, "{:?} vs {:?}", comp.losses, jit.losses);
    std::fs::remove_dir_all(&d).unwrap();
}
