//! The graph-optimization benchmark on the GPU: the same forward graphs compiled by stock
//! `luminal_cuda` 0.2.0 (`GenericCompiler` + `CudaCompiler<f32>`, executed by
//! `Graph::execute`) and by ours (dino's passes, run by the CUDA runtime), with the same weights
//! and inputs. Prints, per workload and implementation: compile time, kernels launched per
//! run, median run time, and the largest difference between the two outputs.
//!
//! Build (links CUDA at build time, see notes in `scripts/cuda-sdk.sh`):
//!   scripts/cuda-sdk.sh install && eval "$(scripts/cuda-sdk.sh env)"
//!   cargo bench --no-run --features stock-cuda --bench stock_cuda
//! Run on the GPU machine: `target/release/deps/stock_cuda-* [--runs N] [WORKLOAD...]`
//! (workloads: block-fwd, vit-s16-fwd; default both). Stock luminal_cuda needs
//! `/usr/local/cuda/include/cuda_fp16.h` (it hard-codes that include path).
//!
//! Stock runs as it comes: its weights are host tensors copied to the device on every run
//! (`CudaCopyToDevice` after every input), each op allocates its output, and one kernel or
//! cuBLAS call runs per primitive op; attention's batched products, which its matmul
//! matcher does not recognise, run as a materialized broadcast product and a sum.
use std::time::Instant;

use dino::bench::workloads::{build, Built, Workload};
use dino::runtime::backend::cpu::{CpuCompiler, CpuRuntime};
use dino::runtime::backend::cuda::device::Gpu;
use dino::runtime::backend::cuda::runtime::CudaRuntime;
use dino::runtime::graph::data;
use dino::runtime::graph::detach::Detach;
use dino::runtime::testing::Rng;
use luminal::prelude::*;

struct Row {
    workload: &'static str,
    imp: &'static str,
    compile_s: f64,
    kernels: usize,
    step_s: f64,
    output: Vec<f32>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The workload's graph with its weights set, and the input data (same seed for both).
fn prepare(w: Workload) -> (Built, Vec<Vec<f32>>) {
    let b = build(w).unwrap_or_else(|e| panic!("building {}: {e}", w.name()));
    let mut rng = Rng::new(7);
    let feed = b.inputs.iter().map(|(_, n)| rng.uniform(*n, 1.0)).collect();
    (b, feed)
}

fn set_inputs(b: &mut Built, feed: &[Vec<f32>]) {
    for ((id, _), v) in b.inputs.iter().zip(feed) {
        data::set(&mut b.cx, *id, v.clone());
    }
}

fn stock(w: Workload, warmup: usize, runs: usize) -> Row {
    let (mut b, feed) = prepare(w);
    for id in &b.outputs.0 {
        b.cx.to_retrieve.insert(*id);
    }
    // our `Detach` (forward identity, no gradient: softmax's max, GELU's exact derivative) is
    // luminal's `Contiguous` in a forward graph; stock knows only luminal's primitives
    for n in b.cx.graph.node_indices().collect::<Vec<_>>() {
        if let Some(op) = b.cx.graph.node_weight_mut(n).filter(|o| o.as_any().is::<Detach>()) {
            *op = Box::new(luminal::op::Contiguous);
        }
    }
    let t = Instant::now();
    b.cx.compile((GenericCompiler::default(), luminal_cuda::CudaCompiler::<f32>::default()), &mut b.outputs);
    let compile_s = t.elapsed().as_secs_f64();
    // every node that is not an input runs as one kernel, copy or cuBLAS call
    let kernels =
        b.cx.graph
            .node_indices()
            .filter(|&n| {
                !(b.cx.get_sources(n).is_empty()
                    && b.cx.graph.node_weight(n).is_some_and(|o| o.as_any().is::<luminal::op::Function>()))
            })
            .count();
    let mut times = vec![];
    let mut output = vec![];
    for i in 0..warmup + runs {
        set_inputs(&mut b, &feed);
        let t = Instant::now();
        b.cx.execute(); // ends with the device-to-host copy of the output: synchronized
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
        let out = b.cx.get_tensor_ref(b.outputs.0[0], 0).expect("stock output");
        output = out.data.as_any().downcast_ref::<Vec<f32>>().expect("host output").clone();
        for id in &b.outputs.0 {
            b.cx.tensors.remove(&(*id, 0));
        }
    }
    Row { workload: w.name(), imp: "stock luminal_cuda", compile_s, kernels, step_s: median(times), output }
}

fn ours(w: Workload, warmup: usize, runs: usize) -> Row {
    let (mut b, feed) = prepare(w);
    let gpu = Gpu::open(0).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    b.cx.compile(CpuCompiler::default(), &mut b.outputs);
    let mut rt = CudaRuntime::new(gpu, &b.cx);
    set_inputs(&mut b, &feed);
    rt.execute(&mut b.cx).unwrap_or_else(|e| panic!("{e}")); // plans and compiles the kernels
    let compile_s = t.elapsed().as_secs_f64();
    let mut times = vec![];
    for _ in 0..warmup + runs {
        set_inputs(&mut b, &feed);
        let t = Instant::now();
        rt.execute(&mut b.cx).unwrap_or_else(|e| panic!("{e}"));
        rt.to_host(&mut b.cx, &b.outputs.0).unwrap_or_else(|e| panic!("{e}")); // synchronized
        times.push(t.elapsed().as_secs_f64());
    }
    let times = times[warmup..].to_vec();
    let output = data::get(&b.cx, b.outputs.0[0]).expect("output").to_vec();
    let kernels = rt.launches().expect("planned");
    Row {
        workload: w.name(),
        imp: "ours (dino passes + CUDA runtime)",
        compile_s,
        kernels,
        step_s: median(times),
        output,
    }
}

/// The same graph on our CPU runtime (checked against PyTorch/timm by the test suite): the
/// reference both GPU outputs are compared with.
fn reference(w: Workload) -> Vec<f32> {
    let (mut b, feed) = prepare(w);
    b.cx.compile(CpuCompiler::default(), &mut b.outputs);
    let mut rt = CpuRuntime::new(&b.cx);
    set_inputs(&mut b, &feed);
    rt.execute(&mut b.cx).unwrap_or_else(|e| panic!("{e}"));
    data::get(&b.cx, b.outputs.0[0]).expect("output").to_vec()
}

/// Largest absolute difference, relative to the reference's largest magnitude (+1).
fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    if got.len() != want.len() {
        return f32::INFINITY;
    }
    let scale = 1.0 + want.iter().fold(0f32, |m, a| m.max(a.abs()));
    got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut runs = 10;
    if let Some(i) = args.iter().position(|a| a == "--runs") {
        runs = args.get(i + 1).and_then(|v| v.parse().ok()).expect("--runs N");
        args.drain(i..i + 2);
    }
    let workloads: Vec<Workload> = if args.is_empty() {
        vec![Workload::BlockFwd, Workload::VitS16Fwd]
    } else {
        args.iter()
            .map(|a| match a.as_str() {
                "block-fwd" => Workload::BlockFwd,
                "vit-s16-fwd" => Workload::VitS16Fwd,
                other => panic!("unknown workload `{other}` (block-fwd, vit-s16-fwd)"),
            })
            .collect()
    };
    println!(
        "{:<12} {:<36} {:>10} {:>8} {:>12} {:>14}",
        "workload", "implementation", "compile s", "kernels", "run ms", "err vs CPU ref"
    );
    let mut ok = true;
    for w in workloads {
        let want = reference(w);
        let line = |r: &Row| {
            println!(
                "{:<12} {:<36} {:>10.2} {:>8} {:>12.3} {:>14.2e}",
                r.workload,
                r.imp,
                r.compile_s,
                r.kernels,
                r.step_s * 1e3,
                rel_diff(&r.output, &want)
            );
        };
        // ours first: if stock fails (or runs out of memory) ours is still reported
        let o = ours(w, 3, runs);
        line(&o);
        ok &= rel_diff(&o.output, &want) <= 1e-4;
        let s = stock(w, 1, runs.min(5));
        line(&s);
        println!("{:<12} ours / stock run time = {:.3}", "", o.step_s / s.step_s);
        if rel_diff(&s.output, &want) > 1e-4 {
            println!(
                "{:<12} stock's output differs from the reference by more than 1e-4 (the note of issue 6 \
                 has why: luminal 0.2.0's view arithmetic, the same on its CPU compiler)",
                ""
            );
        }
    }
    assert!(ok, "our GPU output differs from the CPU reference");
}
