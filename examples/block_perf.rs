//! Scratch timing of one ViT block (B=64, N=50, D=192, 3 heads, MLP 768) forward+backward on
//! the CPU backend. `cargo run --release --example block_perf`
use std::time::Instant;

use dino::runtime::autograd::backward;
use dino::runtime::backend::cpu::{CpuCompiler, CpuRuntime};
use dino::runtime::graph::{data, ops::sum_all, Handles, View};
use dino::runtime::nn::{Block, ParamSet};
use dino::runtime::testing::Rng;
use luminal::prelude::*;

fn main() {
    let mut cx = Box::new(Graph::new());
    let block: Block<192, 3, 64, 576, 768> = Block::new(&mut cx, true, 1e-6);
    let x = cx.named_tensor::<R3<64, 50, 192>>("x");
    let r = cx.named_tensor::<R3<64, 50, 192>>("r");
    let y = block.forward(x);
    let params = ParamSet::of(&block, &mut cx);
    let prod = y * r;
    let loss = sum_all(&mut cx, View { id: prod.id, st: prod.shape });
    let grads = backward(&mut cx, loss.id, &params.ids()).unwrap();
    let mut h = Handles(vec![loss.id]);
    h.0.extend(grads.iter().map(|g| g.id));
    for id in &h.0 {
        cx.no_delete.insert(*id);
    }
    println!("nodes before compile: {}", cx.graph.node_count());
    let t = Instant::now();
    cx.compile(<CpuCompiler>::default(), &mut h);
    println!("nodes after compile: {} ({:.3}s)", cx.graph.node_count(), t.elapsed().as_secs_f64());
    params.init(&mut cx, 0);
    let mut rng = Rng::new(0);
    let mut rt = CpuRuntime::new(&cx);
    rt.set_profiling(true);
    for it in 0..5 {
        data::set(&mut cx, x.id, rng.uniform(64 * 50 * 192, 1.0));
        data::set(&mut cx, r.id, rng.uniform(64 * 50 * 192, 1.0));
        let t = Instant::now();
        rt.execute(&mut cx).unwrap();
        let dt = t.elapsed().as_secs_f64();
        for id in &h.0 {
            data::take(&mut cx, *id);
        }
        println!(
            "iter {it}: {:.1} ms, arena {:.1} MB, kernels {}",
            dt * 1e3,
            rt.stats().arena_bytes as f64 / 1e6,
            rt.stats().kernels
        );
    }
    for (k, t, c) in &rt.stats().profile {
        println!("  {k:10} {:8.2} ms  x{c}", t * 1e3);
    }
    for (k, t) in rt.stats().kernel_times.iter().take(40) {
        println!("  {:7.2} ms  {k}", t * 1e3);
    }
}
