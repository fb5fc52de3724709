//! Tests of the `cuda` feature. Each needs something a CPU machine may lack and says so when
//! it is missing instead of failing: NVRTC (the kernels must compile to PTX; no GPU needed),
//! or a GPU (kernels and cuBLAS calls against the CPU kernels).
use super::blas::tests_support::random_case;
use super::codegen::tests_support::block_kernels;
use super::codegen::{kernel_source, kernel_source_tuned, Tuning};
use super::device::{compile_ptx, CudaLib, Gpu};
use crate::backend::plan::GemmPlan;
use crate::testing::Rng;
use rand::{Rng as _, SeedableRng};

fn gpu_or_skip(what: &str) -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(g) => {
            eprintln!("{what}: on {}", g.describe());
            Some(g)
        }
        Err(e) => {
            eprintln!("{what}: SKIPPED, no GPU here: {e}");
            None
        }
    }
}

#[test]
fn a_missing_library_is_named_with_the_variable_that_finds_it() {
    for lib in [CudaLib::Driver, CudaLib::Nvrtc, CudaLib::Cublas] {
        let msg = lib.missing().to_string();
        assert!(msg.contains("LD_LIBRARY_PATH") && msg.contains(".so"), "{msg}");
        if !lib.present() {
            // a GPU opens without NVRTC (compiled artifacts need none); compiling needs it
            let e = match lib {
                CudaLib::Nvrtc => compile_ptx(&[], "compute_90").err().expect("no NVRTC").to_string(),
                _ => Gpu::open(0).err().expect("no GPU without its libraries").to_string(),
            };
            assert!(e.contains("cannot load"), "{e}");
            eprintln!("as expected here: {e}");
        }
    }
}

#[test]
fn nvrtc_compiles_every_generated_kernel() {
    if !CudaLib::Nvrtc.present() {
        eprintln!("SKIPPED, NVRTC not found: {}", CudaLib::Nvrtc.missing());
        return;
    }
    let kernels = block_kernels();
    let split = Tuning::exercise_all();
    let srcs: Vec<_> = (kernels.iter().enumerate().map(|(i, (k, _))| kernel_source(k, &format!("k{i}"))))
        .chain(kernels.iter().enumerate().map(|(i, (k, _))| kernel_source_tuned(k, &format!("s{i}"), split)))
        .collect();
    let ptx = compile_ptx(&srcs, "compute_90").unwrap_or_else(|e| panic!("{e}")).to_src();
    for s in &srcs {
        assert!(ptx.contains(&format!(".entry {}(", s.name)), "kernel {} missing from the PTX", s.name);
    }
    eprintln!("{} kernels compiled to {} KB of PTX for sm_90", srcs.len(), ptx.len() / 1024);
}

#[test]
fn gpu_kernels_match_the_cpu() {
    let Some(mut gpu) = gpu_or_skip("fused kernels on the GPU") else { return };
    let mut rng = Rng::new(5);
    let mut worst = 0f32;
    // as the runtime generates them, and with every sum split over blocks (atomic adds)
    let tunings = [Tuning::default(), Tuning::exercise_all()];
    for (i, (k, extents, tuning)) in
        block_kernels().into_iter().flat_map(|(k, e)| tunings.map(|t| (k.clone(), e.clone(), t))).enumerate()
    {
        let inputs: Vec<Vec<f32>> = extents.iter().map(|&n| rng.range(n, -2.0, 2.0)).collect();
        let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
        let mut want = vec![0f32; k.out_len()];
        k.run(&refs, &mut want);
        let dev: Vec<_> = inputs.iter().map(|v| gpu.upload(v).unwrap()).collect();
        let dev_refs: Vec<_> = dev.iter().collect();
        let mut out = gpu.upload(&vec![f32::NAN; want.len()]).unwrap();
        gpu.run_source(&kernel_source_tuned(&k, "fused", tuning), &dev_refs, &mut out).unwrap();
        let got = gpu.download(&out, want.len()).unwrap();
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            let e = (g - w).abs() / (1.0 + w.abs());
            if e.is_finite() {
                worst = worst.max(e);
            }
            // the random inputs reach outside some ops' domains: NaN must match NaN, inf inf
            let same = g == w || (g.is_nan() && w.is_nan());
            assert!(e <= 1e-5 || same, "kernel {i} element {j}: {g} vs {w}");
        }
    }
    eprintln!("fused kernels: worst relative error {worst:.2e}");
}

#[test]
fn cublas_products_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("contractions on cuBLAS") else { return };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut worst = 0f32;
    let mut ran = 0;
    for _ in 0..300 {
        let (axes, la, lb, na, nb) = random_case(&mut rng);
        let a: Vec<f32> = (0..na).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..nb).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let plan = GemmPlan::new(&axes, &la, &lb);
        if super::blas::BlasPlan::new(&plan).is_err() {
            continue; // the runtime copies these first; the planner's tests cover them
        }
        let mut want = vec![0f32; plan.out_len()];
        plan.run(&a, &b, &mut want);
        let (da, db) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap());
        let mut out = gpu.upload(&vec![f32::NAN; want.len().max(1)]).unwrap();
        gpu.run_gemm(&plan, &da, &db, &mut out).unwrap();
        let got = gpu.download(&out, want.len()).unwrap();
        for (g, w) in got.iter().zip(&want) {
            worst = worst.max((g - w).abs() / (1.0 + w.abs()));
        }
        ran += 1;
    }
    eprintln!("{ran} products on cuBLAS: worst relative error {worst:.2e}");
    assert!(worst <= 1e-5, "worst relative error {worst}");
}

#[test]
fn a_compiled_block_forward_and_backward_matches_the_cpu() {
    use crate::backend::Passes;
    use crate::nn::{Block, ParamSet};
    use crate::testing::{layer_problem, Differentiated};
    use luminal::prelude::*;
    let Some(gpu) = gpu_or_skip("ViT block forward+backward on the GPU") else { return };
    let build = |cx: &mut Graph| {
        let mut rng = Rng::new(21);
        let b: Block<64, 4, 16, 192, 256, 256> = Block::new(cx, true, 1e-6);
        let x = cx.named_tensor::<luminal::shape::R3<4, 17, 64>>("x");
        let y = b.forward(x);
        let p = ParamSet::of(&b, cx);
        layer_problem(cx, &p, vec![(x.id, rng.uniform(4 * 17 * 64, 1.0))], y, 0.5, &mut rng)
    };
    let mut cpu = Differentiated::new(&build);
    let vals = cpu.values();
    cpu.cx.compile(<Passes>::default(), &mut cpu.handles);
    let mut rt = crate::testing::reference_executor(&cpu.cx);
    let (l0, g0) = cpu.eval_with(&vals, &mut |cx| rt.execute(cx).expect("cpu run"));

    let mut dev = Differentiated::new(&build);
    dev.cx.compile(<Passes>::default(), &mut dev.handles);
    let handles = dev.handles.0.clone();
    let mut grt = super::runtime::CudaRuntime::new(gpu, &dev.cx);
    let (l1, g1) = dev.eval_with(&vals, &mut |cx| {
        grt.execute(cx).expect("gpu run");
        grt.to_host(cx, &handles).expect("download");
    });
    let mut worst = ((l0 - l1).abs() / (1.0 + l0.abs()), 0usize);
    for (i, (a, b)) in g0.iter().zip(&g1).enumerate() {
        let scale = 1.0 + a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let (d, _) = crate::testing::max_abs_diff(a, b);
        if d / scale > worst.0 {
            worst = (d / scale, i + 1);
        }
    }
    eprintln!("block fwd+bwd on the GPU: worst relative error {:.2e} (output {})", worst.0, worst.1);
    assert!(worst.0 <= 1e-4, "{worst:?}");
}
