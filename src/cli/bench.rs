//! `dino bench engine`: our CPU pipeline, stock luminal and PyTorch eager on the same
//! workloads, each measurement in its own process.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::bench::{measure, Impl, Workload};
use crate::device::Device;

use super::bench_passes::{bench_passes, PassesArgs};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time the engine: one ViT block (forward; forward+backward) and a DINO training step,
    /// ours against stock luminal and PyTorch eager (when python3 with torch and timm is
    /// installed), same thread count. Not a test: numbers vary with the machine.
    Engine(EngineArgs),
    /// The pass ablation: one DINO training step of a preset compiled with every pass, with
    /// none, with each pass switched off in turn, and by stock luminal; compile time, nodes,
    /// kernels, step time (median of alternating rounds), GFLOP/s, memory, and the largest
    /// difference of the step's results from the unoptimized graph. Not a test.
    Passes(PassesArgs),
    /// Start-up of a preset's training step: built and compiled at start (JIT) against loaded
    /// from a compiled artifact (`dino compile`), alternating rounds, medians. Not a test.
    Startup(StartupArgs),
    /// The DINO ViT-S/16 training step on the GPU (feature `cuda`): ours against PyTorch fp32
    /// eager and AMP on the same GPU, step time, images/s and FLOP utilization.
    #[cfg(feature = "cuda")]
    Gpu(super::bench_gpu::GpuArgs),
    /// Measure one workload with one implementation and print one JSON line (used by
    /// `engine`, which runs every measurement in a fresh process).
    #[command(hide = true)]
    Worker {
        #[arg(long, value_enum)]
        workload: Workload,
        #[arg(long = "impl", value_enum)]
        implementation: Impl,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Workloads to run (default: all).
    #[arg(long, value_enum, num_args = 1..)]
    pub workload: Vec<Workload>,
    /// Timed steps per measurement process.
    #[arg(long, default_value_t = 5, value_parser = crate::train::hyper::positive)]
    pub runs: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Alternating rounds of ours and PyTorch (medians are over all rounds' steps), so
    /// machine noise hits both alike.
    #[arg(long, default_value_t = 3, value_parser = crate::train::hyper::positive)]
    pub rounds: usize,
    /// Where our pipeline runs (stock luminal and PyTorch eager run on the CPU).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Threads for ours and for PyTorch (stock luminal is single-threaded).
    #[arg(long, default_value_t = 2, value_parser = crate::train::hyper::positive)]
    pub threads: usize,
    /// Give up on stock luminal after this many seconds (it interprets every element).
    #[arg(long, default_value_t = 120)]
    pub stock_timeout: u64,
    /// Skip stock luminal.
    #[arg(long)]
    pub no_stock: bool,
    /// Skip PyTorch.
    #[arg(long)]
    pub no_torch: bool,
    /// One JSON object per workload instead of the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StartupArgs {
    /// The DINO preset (`dino models` lists them).
    #[arg(long, default_value = "fmnist-small")]
    pub model: String,
    /// Images per step (or per forward batch).
    #[arg(long, default_value_t = 16, value_parser = crate::train::hyper::positive)]
    pub batch: usize,
    /// What to start: the training step, or the backbone's forward pass for `dino features`
    /// (`tokens` with --patch-tokens) or `dino attention`.
    #[arg(long, value_enum, default_value_t = super::common::GraphKind::TrainStep)]
    pub graph: super::common::GraphKind,
    /// Alternating rounds (JIT, then compiled).
    #[arg(long, default_value_t = 3, value_parser = crate::train::hyper::positive)]
    pub rounds: usize,
    /// Where both start: the CPU, or a GPU (JIT compiles kernels with NVRTC, the artifact
    /// holds them as CUBIN).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// The architecture the artifact is compiled for [default: the GPU's own].
    #[arg(long)]
    pub arch: Option<String>,
    /// Print the rows as JSON.
    #[arg(long)]
    pub json: bool,
}

fn bench_startup(args: StartupArgs) -> Result<(), String> {
    use crate::bench::startup::{startup, StartupRow};
    let dir = std::env::temp_dir().join(format!("dino-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let artifact = dir.join("step.dart");
    args.device.check().map_err(|e| e.to_string())?;
    let target = match &args.arch {
        Some(a) => args.device.target(Some(a)),
        None => args.device.own_target(),
    }
    .map_err(|e| e.to_string())?;
    type Target = dino_runtime::artifact::Target;
    struct Go<'a>(&'a StartupArgs, &'a std::path::Path, Target);
    impl crate::models::DinoVisitor for Go<'_> {
        type Output = dino_runtime::Result<Vec<StartupRow>>;
        fn visit<M: dino_runtime::model::DinoModel>(self, _: &'static str) -> Self::Output {
            let Go(a, artifact, target) = self;
            let hyper = crate::train::Hyper { batch_size: Some(a.batch), ..Default::default() };
            startup::<M>(&a.model, hyper.apply(&M::CONFIG)?, artifact, a.rounds, a.device, target)
        }
    }
    struct Fwd<'a>(&'a StartupArgs, &'a std::path::Path, crate::compiled::ForwardGraph, Target);
    impl crate::models::VitVisitor for Fwd<'_> {
        type Output = dino_runtime::Result<Vec<StartupRow>>;
        fn visit<V: dino_runtime::model::VitModel>(self, _: &'static str) -> Self::Output {
            let Fwd(a, artifact, graph, target) = self;
            crate::bench::startup::startup_forward::<V>(graph, a.batch, artifact, a.rounds, a.device, target)
        }
    }
    let rows = match args.graph.forward() {
        None => crate::models::with_dino(&args.model, Go(&args, &artifact, target)),
        Some(g) => crate::models::with_vit(&args.model, Fwd(&args, &artifact, g, target)),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let rows = rows.ok_or_else(|| format!("model `{}`: no such preset", args.model))?.map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", serde_json::to_string(&rows).expect("json"));
        return Ok(());
    }
    println!(
        "{} {}, batch {}, {}, medians of {} alternating rounds:",
        args.model,
        match args.graph.forward() {
            None => "training step",
            Some(g) => g.name(),
        },
        args.batch,
        match args.device {
            Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
            Device::Cuda => "cuda".to_string(),
        },
        args.rounds
    );
    println!("  {:<10} {:>10} {:>12} {:>10} {:>12}", "start", "ready ms", "1st run ms", "total ms", "check");
    for r in &rows {
        println!(
            "  {:<10} {:>10.1} {:>12.1} {:>10.1} {:>12.5}",
            r.how,
            r.ready_s * 1e3,
            r.first_step_s * 1e3,
            (r.ready_s + r.first_step_s) * 1e3,
            r.check
        );
    }
    Ok(())
}

pub fn run(cmd: BenchCommand) -> Result<(), String> {
    match cmd {
        BenchCommand::Worker { workload, implementation, runs, warmup, device } => {
            let m = measure(workload, implementation, warmup, runs, device).map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&m).map_err(|e| e.to_string())?);
            Ok(())
        }
        BenchCommand::Passes(args) => bench_passes(args),
        BenchCommand::Startup(args) => bench_startup(args),
        BenchCommand::Engine(args) => {
            args.device.check().map_err(|e| e.to_string())?;
            engine(args)
        }
        #[cfg(feature = "cuda")]
        BenchCommand::Gpu(args) => super::bench_gpu::run(args),
    }
}

/// Run a command, return its last stdout line parsed as JSON, or why not.
fn run_json(mut cmd: Command, timeout: Duration) -> Result<Value, String> {
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("cannot start: {e}"))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(format!("failed ({status}): {}", err.lines().last().unwrap_or("")));
            }
            let line = stdout.lines().last().ok_or("no output")?;
            return serde_json::from_str(line).map_err(|e| format!("bad JSON ({e}): {line}"));
        }
        if start.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            return Err(format!("did not finish within {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn worker(w: Workload, imp: &str, runs: usize, warmup: usize, threads: usize, device: Device) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("own path"));
    c.args([
        "bench",
        "worker",
        "--workload",
        w.name(),
        "--impl",
        imp,
        "--runs",
        &runs.to_string(),
        "--warmup",
        &warmup.to_string(),
        "--device",
        &device.to_string(),
    ]);
    c.env("RAYON_NUM_THREADS", threads.to_string());
    c
}

fn torch_script() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_torch.py"),
        PathBuf::from("scripts/bench_torch.py"),
    ];
    candidates.into_iter().find(|p| p.exists())
}

fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch, timm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn runs_of(v: &Value) -> Vec<f64> {
    v["runs"].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default()
}

fn engine(args: EngineArgs) -> Result<(), String> {
    let workloads = if args.workload.is_empty() {
        vec![Workload::BlockFwd, Workload::BlockFwdbwd, Workload::DinoStep, Workload::DinoVits16Compile]
    } else {
        args.workload.clone()
    };
    let torch = if args.no_torch { None } else { torch_script().filter(|_| torch_available()) };
    if !args.no_torch && torch.is_none() {
        eprintln!("note: python3 with torch and timm not found: PyTorch columns skipped");
    }
    let long = Duration::from_secs(3600);
    for w in workloads {
        if w == Workload::DinoVits16Compile {
            eprintln!("[{}] compiling (not run)", w.name());
            let v = run_json(worker(w, "ours", 0, 0, args.threads, args.device), long)
                .map_err(|e| format!("{}: {e}", w.name()))?;
            let result = json!({"workload": w.name(), "threads": args.threads, "ours": v, "compile_only": true});
            if args.json {
                println!("{result}");
            } else {
                print_report(&result);
            }
            continue;
        }
        // alternate ours and PyTorch, each round a fresh process
        let (mut ours, mut torch_res): (Option<Value>, Option<Value>) = (None, None);
        let (mut ours_runs, mut torch_runs) = (vec![], vec![]);
        let (mut ours_peak, mut torch_peak) = (0f64, 0f64);
        for round in 0..args.rounds.max(1) {
            eprintln!("[{}] round {}/{}: ours", w.name(), round + 1, args.rounds.max(1));
            let o = run_json(worker(w, "ours", args.runs, args.warmup, args.threads, args.device), long)
                .map_err(|e| format!("{}: ours {e}", w.name()))?;
            ours_runs.extend(runs_of(&o));
            ours_peak = ours_peak.max(o["peak_rss_mb"].as_f64().unwrap_or(0.0));
            ours = Some(o);
            if let Some(script) = &torch {
                eprintln!("[{}] round {}/{}: pytorch", w.name(), round + 1, args.rounds.max(1));
                let mut c = Command::new("python3");
                c.arg(script).args([
                    "--workload",
                    w.name(),
                    "--threads",
                    &args.threads.to_string(),
                    "--runs",
                    &args.runs.to_string(),
                ]);
                c.args([
                    "--warmup",
                    &args.warmup.to_string(),
                    "--flops",
                    &ours.as_ref().expect("ours")["flops_per_step"].to_string(),
                ]);
                match run_json(c, long) {
                    Ok(t) => {
                        torch_runs.extend(runs_of(&t));
                        torch_peak = torch_peak.max(t["peak_rss_mb"].as_f64().unwrap_or(0.0));
                        torch_res = Some(t);
                    }
                    Err(e) => eprintln!("[{}] pytorch {e}", w.name()),
                }
            }
        }
        let mut ours = ours.expect("at least one round");
        let flops = ours["flops_per_step"].as_f64().unwrap_or(0.0);
        let ours_med = median(&mut ours_runs);
        ours["step_s"] = json!(ours_med);
        ours["runs"] = json!(ours_runs);
        ours["gflops"] = json!(flops / ours_med / 1e9);
        ours["peak_rss_mb"] = json!(ours_peak);
        if let Some(t) = torch_res.as_mut() {
            let med = median(&mut torch_runs);
            t["step_s"] = json!(med);
            t["runs"] = json!(torch_runs);
            t["gflops"] = json!(flops / med / 1e9);
            t["peak_rss_mb"] = json!(torch_peak);
        }
        let stock = if args.no_stock {
            json!({"status": "skipped"})
        } else {
            eprintln!("[{}] stock luminal (timeout {} s)", w.name(), args.stock_timeout);
            match run_json(worker(w, "stock", 1, 0, 1, Device::Cpu), Duration::from_secs(args.stock_timeout)) {
                Ok(v) => v,
                Err(e) => json!({"status": e}),
            }
        };
        let ratio = torch_res.as_ref().map(|t| ours_med / t["step_s"].as_f64().unwrap_or(f64::NAN));
        let rss_ratio = torch_res.as_ref().map(|t| ours_peak / t["peak_rss_mb"].as_f64().unwrap_or(f64::NAN));
        let result = json!({
            "workload": w.name(),
            "threads": args.threads,
            "ours": ours,
            "stock": stock,
            "pytorch": torch_res,
            "ratio_ours_over_pytorch": ratio,
            "rss_ratio_ours_over_pytorch": rss_ratio,
        });
        if args.json {
            println!("{result}");
        } else {
            print_report(&result);
        }
    }
    Ok(())
}

fn print_report(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!("== {} ({} threads) ==", r["workload"].as_str().unwrap_or("?"), r["threads"]);
    let line = |name: &str, v: &Value| {
        if r["compile_only"].as_bool() == Some(true) {
            if v.is_null() {
                return;
            }
            println!(
                "  {name:<14} compile only: {:.2} s, {} kernels, arena {:.0} MB planned, peak RSS {:.0} MB, {:.1} TFLOP per step",
                f(&v["compile_total_s"]),
                v["kernels"],
                f(&v["arena_mb"]),
                f(&v["peak_rss_mb"]),
                f(&v["flops_per_step"]) / 1e12
            );
        } else if v.get("step_s").is_some() {
            println!(
                "  {name:<14} step {:>9.2} ms  {:>7.1} GFLOP/s  peak RSS {:>7.1} MB (at start {:.1})",
                f(&v["step_s"]) * 1e3,
                f(&v["gflops"]),
                f(&v["peak_rss_mb"]),
                f(&v["base_rss_mb"])
            );
        } else if !v.is_null() {
            println!("  {name:<14} {}", v["status"].as_str().unwrap_or("?"));
        }
    };
    line("ours", &r["ours"]);
    line("stock luminal", &r["stock"]);
    line("pytorch eager", &r["pytorch"]);
    if let Some(x) = r["ratio_ours_over_pytorch"].as_f64() {
        println!("  ours / pytorch: time {x:.3}, peak RSS {:.3}", f(&r["rss_ratio_ours_over_pytorch"]));
    }
    for (name, v) in [("ours", &r["ours"]), ("stock", &r["stock"])] {
        if let Some(nodes) = v["nodes"].as_array() {
            let s: Vec<String> = nodes.iter().map(|n| format!("{} {}", n[0].as_str().unwrap_or(""), n[1])).collect();
            println!("  {name} nodes: {}", s.join(", "));
            let c: Vec<String> = v["compile_s"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| format!("{} {:.3}s", n[0].as_str().unwrap_or(""), f(&n[1])))
                .collect();
            println!("  {name} compile: {} (total {:.2} s)", c.join(", "), f(&v["compile_total_s"]));
        }
    }
    let o = &r["ours"];
    if let Some(k) = o["kernels"].as_u64() {
        println!("  ours: {k} kernels, arena {:.1} MB", f(&o["arena_mb"]));
    }
    for p in o["profile"].as_array().into_iter().flatten() {
        println!("    {:<10} {:>8.2} ms in {} kernels", p[0].as_str().unwrap_or(""), f(&p[1]) * 1e3, p[2]);
    }
    for p in o["slowest"].as_array().into_iter().flatten().take(8) {
        let desc = p[0].as_str().unwrap_or("");
        let short: String = desc.chars().take(110).collect();
        println!("    {:>8.2} ms  {short}", f(&p[1]) * 1e3);
    }
}
