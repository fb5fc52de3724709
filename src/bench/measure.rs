//! Running one workload in this process: compile with per-pass statistics, then time steps.
use std::time::Instant;

use dino_runtime::backend::cse::{CsePass, DeadCodePass};
use dino_runtime::backend::executor::by_kind;
use dino_runtime::backend::fusion::FusionPass;
use dino_runtime::backend::gemm::GemmPass;
use dino_runtime::backend::row_fusion::RowFusionPass;
use dino_runtime::graph::data;
use dino_runtime::testing::Rng;
use dino_runtime::Result;
use luminal::prelude::*;
use serde::Serialize;

use super::workloads::{build, Built, Workload};
use crate::device::Device;

/// Which pipeline runs the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Impl {
    /// dino's passes (dead code, CSE, GEMM, fusion) and CPU runtime.
    Ours,
    /// luminal's `GenericCompiler + CPUCompiler` and `Graph::execute`.
    Stock,
}

/// What one measurement reports (one JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub workload: &'static str,
    #[serde(rename = "impl")]
    pub implementation: &'static str,
    pub threads: usize,
    /// Median step time.
    pub step_s: f64,
    pub runs: Vec<f64>,
    pub gflops: f64,
    pub flops_per_step: f64,
    pub peak_rss_mb: f64,
    pub base_rss_mb: f64,
    /// Node counts after each build stage and each pass.
    pub nodes: Vec<(String, usize)>,
    /// Seconds per pass.
    pub compile_s: Vec<(String, f64)>,
    pub compile_total_s: f64,
    /// Kernel count and arena of our runtime.
    pub kernels: Option<usize>,
    pub arena_mb: Option<f64>,
    /// The execution order our runtime chose.
    pub order: Option<&'static str>,
    /// Where the time goes (ours, profiled run): seconds and count per kernel kind, and the
    /// slowest kernels.
    pub profile: Vec<(String, f64, usize)>,
    pub slowest: Vec<(String, f64)>,
}

/// Resident-set figures of this process from /proc (MB): (current, peak).
pub fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn timed<C: Compiler>(b: &mut Built, name: &str, pass: C, stats: &mut Measurement) {
    let t = Instant::now();
    let Built { cx, outputs, transfers, optimizer, .. } = b;
    match optimizer.as_mut() {
        Some(opt) => cx.compile(pass, (outputs, transfers, opt)),
        None => cx.compile(pass, (outputs, transfers)),
    }
    stats.compile_s.push((name.to_string(), t.elapsed().as_secs_f64()));
    stats.nodes.push((format!("after {name}"), b.cx.graph.node_count()));
}

/// One step's bookkeeping: feed inputs, run, read and drop outputs, move new state.
fn step(b: &mut Built, feed: &[Vec<f32>], run: &mut dyn FnMut(&mut Graph) -> Result<()>) -> Result<f64> {
    for ((id, _), v) in b.inputs.iter().zip(feed) {
        data::set(&mut b.cx, *id, v.clone());
    }
    if let Some(opt) = b.optimizer.as_mut() {
        opt.pre_step(&mut b.cx, 1e-4, 0.04);
    }
    let t = Instant::now();
    run(&mut b.cx)?;
    let dt = t.elapsed().as_secs_f64();
    for id in &b.outputs.0 {
        data::take(&mut b.cx, *id);
    }
    if let Some(opt) = b.optimizer.as_ref() {
        opt.take_grad_norm(&mut b.cx);
        opt.post_step(&mut b.cx);
    }
    for pair in b.transfers.0.chunks(2) {
        transfer_data_same_graph(vec![pair[0]], vec![pair[1]], &mut b.cx);
    }
    Ok(dt)
}

/// Build, compile and time a workload in this process.
pub fn measure(w: Workload, imp: Impl, warmup: usize, runs: usize, device: Device) -> Result<Measurement> {
    let (base_rss, _) = rss_mb();
    let t_build = Instant::now();
    let mut b = build(w)?;
    let build_s = t_build.elapsed().as_secs_f64();
    let mut m = Measurement {
        workload: w.name(),
        implementation: match imp {
            Impl::Ours => "ours",
            Impl::Stock => "stock-luminal",
        },
        threads: if imp == Impl::Ours { rayon::current_num_threads() } else { 1 },
        step_s: 0.0,
        runs: vec![],
        gflops: 0.0,
        flops_per_step: b.flops,
        peak_rss_mb: 0.0,
        base_rss_mb: base_rss,
        nodes: b.stages.clone(),
        compile_s: vec![("build+autograd+optimizer".to_string(), build_s)],
        compile_total_s: 0.0,
        kernels: None,
        arena_mb: None,
        order: None,
        profile: vec![],
        slowest: vec![],
    };
    match imp {
        Impl::Ours => {
            timed(&mut b, "dead-code", DeadCodePass, &mut m);
            timed(&mut b, "cse", CsePass, &mut m);
            timed(&mut b, "gemm", GemmPass, &mut m);
            timed(&mut b, "fusion", FusionPass, &mut m);
            timed(&mut b, "row-fusion", RowFusionPass, &mut m);
        }
        Impl::Stock => {
            timed(&mut b, "GenericCompiler", GenericCompiler::default(), &mut m);
            timed(&mut b, "CPUCompiler", CPUCompiler::default(), &mut m);
        }
    }
    if w == Workload::DinoVits16Compile {
        // compile only: plan the execution (kernels bound, arena laid out), run nothing
        let t = Instant::now();
        let mut rt = device.executor(&b.cx)?;
        rt.plan(&b.cx)?;
        m.compile_s.push(("plan".to_string(), t.elapsed().as_secs_f64()));
        m.compile_total_s = m.compile_s.iter().map(|c| c.1).sum();
        m.kernels = Some(rt.stats().kernels);
        m.arena_mb = Some(rt.stats().arena_bytes as f64 / 1e6);
        m.order = Some(rt.stats().order);
        m.peak_rss_mb = rss_mb().1;
        return Ok(m);
    }
    m.compile_total_s = m.compile_s.iter().map(|c| c.1).sum();
    let mut rng = Rng::new(7);
    let feed: Vec<Vec<f32>> = b.inputs.iter().map(|(_, n)| rng.uniform(*n, 1.0)).collect();
    let mut times = vec![];
    match imp {
        Impl::Ours => {
            let mut rt = device.executor(&b.cx)?;
            let outputs = b.outputs.0.clone();
            let mut run = |cx: &mut Graph| rt.run(cx, &outputs);
            for _ in 0..warmup {
                step(&mut b, &feed, &mut run)?;
            }
            for _ in 0..runs {
                times.push(step(&mut b, &feed, &mut run)?);
            }
            // one more, profiled (not counted in the timings)
            rt.start_profile();
            step(&mut b, &feed, &mut |cx: &mut Graph| rt.run(cx, &outputs))?;
            let prof = rt.take_profile();
            let st = rt.stats();
            m.kernels = Some(st.kernels);
            m.arena_mb = Some(st.arena_bytes as f64 / 1e6);
            m.order = Some(st.order);
            m.profile = by_kind(&prof).into_iter().map(|(k, calls, s)| (k, s, calls)).collect();
            let keep = std::env::var("DINO_BENCH_SLOWEST").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
            m.slowest = prof.iter().take(keep).map(|p| (p.what.clone(), p.seconds)).collect();
        }
        Impl::Stock => {
            let mut run = |cx: &mut Graph| {
                cx.execute();
                Ok(())
            };
            for _ in 0..warmup {
                step(&mut b, &feed, &mut run)?;
            }
            for _ in 0..runs {
                times.push(step(&mut b, &feed, &mut run)?);
            }
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    m.step_s = sorted[sorted.len() / 2];
    m.gflops = b.flops / m.step_s / 1e9;
    m.runs = times;
    m.peak_rss_mb = rss_mb().1;
    Ok(m)
}
