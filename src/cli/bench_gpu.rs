//! `dino bench gpu` (feature `cuda`): the DINO ViT-S/16 training step (2x224 + 10x96 crops)
//! on our CUDA runtime, beside the same step in PyTorch on the same GPU (fp32 eager, and AMP
//! as the reference trains), as step time, images/s and model FLOP utilization.
use std::process::Command;
use std::time::Instant;

use clap::Args;
use dino_models::DinoVitS16Paper;
use dino_runtime::backend::executor::{by_kind, Executor};
use dino_runtime::backend::Passes;
use dino_runtime::dino::{DinoStep, StepHyper};
use serde_json::{json, Value};

use crate::bench::workloads::matmul_flops;
use crate::device::{Device, DeviceOptions};

#[derive(Debug, Args)]
pub struct GpuArgs {
    /// Images per step (each gives 2 global and 10 local crops).
    #[arg(long, default_value_t = 64, value_parser = crate::train::hyper::positive)]
    pub batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10, value_parser = crate::train::hyper::positive)]
    pub runs: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// The GPU's peak FP32 throughput in TFLOP/s for the utilization figure (default: from the
    /// device name; H100 SXM / H200: 67, H100 PCIe: 51).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Skip PyTorch.
    #[arg(long)]
    pub no_torch: bool,
    /// Products in TF32 on tensor cores (ours and PyTorch's fp32 run alike).
    #[arg(long)]
    pub tf32: bool,
    /// After the timed steps, run one step timing each kernel and product alone, and print
    /// where the time goes.
    #[arg(long)]
    pub profile: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn peak_fp32(name: &str) -> f64 {
    match name {
        n if n.contains("H100") && n.contains("PCIe") => 51.0,
        n if n.contains("H100") || n.contains("H200") || n.contains("GH200") => 67.0,
        n if n.contains("A100") => 19.5,
        _ => f64::NAN,
    }
}

fn ours(args: &GpuArgs) -> Result<(Value, f64, String), String> {
    let e = |e: dino_runtime::Error| e.to_string();
    let t0 = Instant::now();
    let mut step = DinoStep::<DinoVitS16Paper>::build(args.batch).map_err(e)?;
    let flops = matmul_flops(&step.train.cx);
    step.init(0);
    step.compile(Passes::default());
    let compile_s = t0.elapsed().as_secs_f64();
    let mut rt = Device::Cuda
        .executor_with(&step.train.cx, DeviceOptions { tf32: args.tf32, ..Default::default() })
        .map_err(e)?;
    let device = rt.describe();
    let (ng, nl) = step.crop_sizes();
    // fixed random crops: the step alone is timed
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    let mut noise = |n: usize| -> Vec<f32> { (0..n).map(|_| rand::Rng::gen_range(&mut rng, -1.0..1.0)).collect() };
    let (g, l) = (noise(ng), noise(nl));
    let h = StepHyper { lr: 5e-4, weight_decay: 0.04, momentum: 0.996, teacher_temp: 0.04, freeze_last_layer: false };
    let mut times = vec![];
    let mut first_s = 0.0;
    // fixed crops, fresh drop-path masks and the hyperparameters: what a training step feeds
    let mut drop_rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(2);
    // the crops are uploaded once and stay on the device, as PyTorch's do in its benchmark
    step.set_batch(g, l).map_err(e)?;
    step.train.cx.no_delete.insert(step.global_crops);
    step.train.cx.no_delete.extend(step.local_crops);
    let mut feed = move |step: &mut DinoStep<DinoVitS16Paper>| -> dino_runtime::Result<()> {
        step.set_drop_masks(&mut drop_rng);
        step.set_hyper(&h);
        Ok(())
    };
    for i in 0..args.warmup + args.runs {
        feed(&mut step).map_err(e)?;
        let t = Instant::now();
        step.run_on(rt.as_mut()).map_err(e)?; // synchronizes: the loss is on the host
        let dt = t.elapsed().as_secs_f64();
        let out = step.outputs().map_err(e)?;
        step.advance();
        if i == 0 {
            first_s = dt;
            eprintln!("first step (plan + NVRTC + run) {dt:.2} s, loss {:.4}", out.loss);
        }
        if i >= args.warmup {
            times.push(dt);
        }
    }
    let med = median(times.clone());
    if args.profile {
        feed(&mut step).map_err(e)?;
        print_profile(rt.as_mut(), &mut step).map_err(e)?;
    }
    Ok((
        json!({"step_s": med, "runs": times, "images_per_s": args.batch as f64 / med, "flops": flops,
               "tflops": flops / med / 1e12, "compile_s": compile_s, "first_step_s": first_s}),
        flops,
        device,
    ))
}

/// One step with every kernel and product timed alone: totals per kind and the top entries.
fn print_profile<M: dino_runtime::model::DinoModel>(
    rt: &mut dyn Executor,
    step: &mut DinoStep<M>,
) -> dino_runtime::Result<()> {
    rt.start_profile();
    step.run_on(rt)?;
    step.advance();
    let prof = rt.take_profile();
    let total: f64 = prof.iter().map(|p| p.seconds).sum();
    let kinds = by_kind(&prof);
    eprintln!("profile of one step (each launch synchronized: {:.1} ms in all)", total * 1e3);
    for (k, n, s) in kinds {
        eprintln!("  {k:<6} {n:>6} launches {:>9.2} ms ({:.0}%)", s * 1e3, 100.0 * s / total);
    }
    for p in prof.iter().take(25) {
        eprintln!("  {:>8.3} ms {:>4}x  {}", p.seconds * 1e3, p.calls, p.what);
    }
    Ok(())
}

fn torch(args: &GpuArgs, amp: bool) -> Result<Value, String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_torch_gpu.py");
    let script = if script.exists() { script } else { "scripts/bench_torch_gpu.py".into() };
    let mut c = Command::new("python3");
    c.arg(&script).args(["--batch", &args.batch.to_string(), "--runs", &args.runs.to_string()]);
    c.args(["--warmup", &args.warmup.to_string()]);
    if amp {
        c.arg("--amp");
    }
    if args.tf32 {
        c.arg("--tf32");
    }
    let out = c.output().map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("failed").to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).map_err(|e| format!("{e}: {text}"))
}

pub fn run(args: GpuArgs) -> Result<(), String> {
    let (o, flops, device) = ours(&args)?;
    let peak = args.peak_tflops.unwrap_or_else(|| peak_fp32(&device));
    let line = |name: &str, v: &Value| {
        let st = v["step_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{name:<22} {:>8.1} ms/step  {:>7.0} img/s  {:>6.1} TFLOP/s  MFU {:>5.1}% of {peak} TFLOP/s fp32",
            st * 1e3,
            args.batch as f64 / st,
            flops / st / 1e12,
            100.0 * flops / st / 1e12 / peak
        );
    };
    println!("DINO ViT-S/16 step, 2x224 + 10x96 crops, batch {} on {device}", args.batch);
    println!("{:.2} TFLOP of matrix products per step (ours, counted on the graph)", flops / 1e12);
    line(if args.tf32 { "ours (fp32, TF32 GEMMs)" } else { "ours (fp32)" }, &o);
    if !args.no_torch {
        // AMP has no TF32 variant: measured once, in the fp32 run
        for amp in [false, true].into_iter().filter(|&amp| !(amp && args.tf32)) {
            let name = if amp { "PyTorch AMP (fp16)" } else { "PyTorch fp32 eager" };
            match torch(&args, amp) {
                Ok(t) => {
                    line(name, &t);
                    let ratio = o["step_s"].as_f64().unwrap_or(f64::NAN) / t["step_s"].as_f64().unwrap_or(f64::NAN);
                    println!("{:<22} ours / {name} step time = {ratio:.2}", "");
                }
                Err(e) => println!("{name}: not measured ({e})"),
            }
        }
    }
    Ok(())
}
