//! The whole DINO training step on the GPU runtime against the CPU runtime: three steps of a
//! small objective (teacher on 2 global crops, student on all, loss, backward, clipping, AdamW,
//! EMA, center), same weights, same crops; losses and every student and teacher weight after
//! them. Needs the `cuda` feature and a GPU; without a GPU it says so and passes.
#![cfg(feature = "cuda")]
mod common;

use common::splitmix::uniform;
use dino::device::Device;
use dino::runtime::backend::Passes;
use dino::runtime::dino::{DinoStep, StepHyper};
use dino::runtime::graph::data;

dino::vit! {
    pub GpuVit { image: 16, patch: 4, channels: 1, dim: 32, depth: 2, heads: 2, mlp: 64, drop_path: 0.0 }
}

dino::dino! {
    pub GpuDino for GpuVit {
        head: { hidden: 64, bottleneck: 16, out: 96, layers: 3, norm_last_layer: true },
        crops: { global: 2 x 16 scale 0.4..1.0, local: 4 x 8 scale 0.05..0.4 },
        student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9,
        teacher_momentum: 0.996 -> 1.0 cosine,
        optimizer: adamw { lr: 5e-4, warmup: 0 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
        clip_grad: 3.0, freeze_last_layer: 0 epochs,
        augment: { normalize: mean [0.5] std [0.5] },
    }
}

const BATCH: usize = 8;

#[test]
fn three_dino_steps_on_the_gpu_equal_the_cpu() {
    if let Err(e) = Device::Cuda.check() {
        eprintln!("DINO step on the GPU: SKIPPED, no GPU here: {e}");
        return;
    }
    let hyper =
        StepHyper { lr: 1e-3, weight_decay: 0.04, momentum: 0.99, teacher_temp: 0.04, freeze_last_layer: false };
    let mut runs = vec![];
    for device in [Device::Cpu, Device::Cuda] {
        let mut s = DinoStep::<GpuDino>::build(BATCH).unwrap();
        s.init(0);
        s.compile(Passes::default());
        let mut rt = device.executor(&s.train.cx).unwrap();
        eprintln!("DINO step on {}", rt.describe());
        let mut losses = vec![];
        for it in 0..3u64 {
            let (ng, nl) = s.crop_sizes();
            s.set_batch(uniform(2 * it + 1, 0, ng), uniform(2 * it + 2, 0, nl)).unwrap();
            s.set_hyper(&hyper);
            s.run_on(rt.as_mut()).unwrap();
            losses.push(s.outputs().unwrap().loss);
            s.advance();
        }
        // weights back to the host for comparison
        let params: Vec<(String, _)> = [("student", &s.student_params), ("teacher", &s.teacher_params)]
            .iter()
            .flat_map(|(who, set)| set.params.iter().map(move |p| (format!("{who}.{}", p.name), p.id)))
            .collect();
        let ids: Vec<_> = params.iter().map(|p| p.1).collect();
        rt.to_host(&mut s.train.cx, &ids).unwrap();
        let w: Vec<(String, Vec<f32>)> =
            params.iter().map(|(n, id)| (n.clone(), data::get(&s.train.cx, *id).expect("weight").to_vec())).collect();
        runs.push((losses, w));
    }
    let ((l0, w0), (l1, w1)) = (&runs[0], &runs[1]);
    eprintln!("losses CPU {l0:?} GPU {l1:?}");
    let mut worst = (0f32, String::new());
    for ((name, a), (_, b)) in w0.iter().zip(w1) {
        let scale = 1.0 + a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    for (a, b) in l0.iter().zip(l1) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "losses {l0:?} vs {l1:?}");
    }
    eprintln!("worst relative weight difference {:.2e} ({})", worst.0, worst.1);
    assert!(worst.0 <= 1e-4, "{worst:?}");
}

/// The kernels of the real benchmark step (DINO ViT-S/16, 2x224 + 10x96 crops, batch 64),
/// compiled with NVRTC: needs NVRTC, not a GPU.
#[test]
fn vits16_step_kernels_compile_with_nvrtc() {
    use dino::runtime::backend::cuda::device::{compile_ptx, CudaLib};
    use dino::runtime::backend::cuda::runtime::distinct_kernels;
    if !CudaLib::Nvrtc.present() {
        eprintln!("SKIPPED, NVRTC not found: {}", CudaLib::Nvrtc.missing());
        return;
    }
    // building the ViT-S/16 step graph recurses deeper than a test thread's default stack
    let (sources, steps) = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let mut s = DinoStep::<dino_models::DinoVitS16Paper>::build(64).unwrap();
            s.compile(Passes::default());
            distinct_kernels(&s.train.cx).unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
    let t = std::time::Instant::now();
    let ptx = compile_ptx(&sources, "compute_90").unwrap_or_else(|e| panic!("{e}")).to_src();
    eprintln!(
        "ViT-S/16 DINO step: {steps} fused steps, {} distinct kernels, NVRTC {:.1} s, {} KB of PTX",
        sources.len(),
        t.elapsed().as_secs_f64(),
        ptx.len() / 1024
    );
    assert!(sources.len() < steps, "blocks share kernels");
    assert!(ptx.contains(&format!(".entry k{}(", sources.len() - 1)));
}

/// The trainer end to end on the GPU (`--device cuda`) against the same run on the CPU: real
/// Fashion-MNIST images (the committed subset), fmnist-small, 2 epochs of 4 steps with the
/// last layer frozen in the first, a checkpoint (weights brought back to the host and sent up
/// again) between the epochs. Losses step by step and the final teacher.
#[test]
fn training_on_the_gpu_follows_the_cpu() {
    use dino::dataset::DataSpec;
    use dino::train::{log, train, Device, Hyper, RunConfig, TrainOptions};
    if let Err(e) = Device::Cuda.check() {
        eprintln!("training on the GPU: SKIPPED, no GPU here: {e}");
        return;
    }
    // the fixture beside the sources, or (prebuilt binary run from a checkout) under the cwd
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fmnist-subset");
    let fixture = if fixture.exists() { fixture } else { "tests/fixtures/fmnist-subset".into() };
    let run = |device: Device| {
        let out = common::Scratch::unmade(&format!("gpu-train-{device:?}"));
        let opts = TrainOptions {
            run: RunConfig {
                preset: "fmnist-small".into(),
                data: DataSpec::Fmnist(Some(fixture.clone())),
                val: None,
                seed: 5,
                limit: Some(128),
                test_limit: None,
                knn: false,
                hyper: Hyper { batch_size: Some(32), ..Default::default() },
                log_every: 1,
                save_every: 1,
                precision: Default::default(),
            },
            out: out.to_path_buf(),
            resume: false,
            force: false,
            stop_after: None,
            group: Default::default(),
            quiet: true,
            device,
            compiled: None,
        };
        // the ViT graph is deep: build it on a thread with room
        let r = std::thread::Builder::new().stack_size(256 << 20).spawn(move || train(&opts)).unwrap().join().unwrap();
        let r = r.unwrap_or_else(|e| panic!("{device:?}: {e}"));
        let ck = safetensors_teacher(&r.checkpoint);
        let _ = log::read(&out.join("log.jsonl")).unwrap();
        (r.losses, ck)
    };
    let (l_cpu, t_cpu) = run(Device::Cpu);
    let (l_gpu, t_gpu) = run(Device::Cuda);
    eprintln!("losses CPU {:?}", l_cpu.iter().map(|l| l.1).collect::<Vec<_>>());
    eprintln!("losses GPU {:?}", l_gpu.iter().map(|l| l.1).collect::<Vec<_>>());
    assert_eq!(l_cpu.len(), 8);
    assert_eq!(l_cpu.len(), l_gpu.len());
    for ((i, a), (_, b)) in l_cpu.iter().zip(&l_gpu) {
        assert!((a - b).abs() <= 1e-3 * (1.0 + a.abs()), "iteration {i}: CPU {a} GPU {b}");
    }
    let scale = 1.0 + t_cpu.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = t_cpu.iter().zip(&t_gpu).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    eprintln!("trainer on the GPU: 8 steps, final teacher weights within {d:.2e} (relative) of the CPU run's");
    assert!(d <= 1e-3, "{d}");
}

/// Every `teacher.*` tensor of a checkpoint, concatenated in name order.
fn safetensors_teacher(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().filter(|n| n.starts_with("teacher.")).cloned().collect();
    names.sort();
    assert!(!names.is_empty(), "no teacher tensors in {}", path.display());
    names
        .iter()
        .flat_map(|n| {
            let t = st.tensor(n).unwrap();
            t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<_>>()
        })
        .collect()
}
