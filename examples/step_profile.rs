//! Scratch: profile of a benchmark workload's kernels. `cargo run --release --example step_profile [dino-step]`
use dino::bench::{measure, Impl, Workload};

fn main() {
    let w = match std::env::args().nth(1).as_deref() {
        Some("block-fwd") => Workload::BlockFwd,
        Some("block-fwdbwd") => Workload::BlockFwdbwd,
        _ => Workload::DinoStep,
    };
    let m = measure(w, Impl::Ours, 1, 3).unwrap();
    println!("order {:?} kernels {:?}", m.order, m.kernels);
    println!(
        "step {:.1} ms (runs {:?}), peak rss {:.0} MB, arena {:.0} MB",
        m.step_s * 1e3,
        m.runs,
        m.peak_rss_mb,
        m.arena_mb.unwrap()
    );
    for (k, t, c) in &m.profile {
        println!("{k:10} {:8.1} ms x{c}", t * 1e3);
    }
    // aggregate by kernel description without the label noise
    let mut agg: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    for (d, t) in &m.slowest {
        let key = if d.starts_with("Gemm") { d.clone() } else { d.split("] ").nth(1).unwrap_or(d).to_string() };
        let e = agg.entry(key).or_default();
        e.0 += t;
        e.1 += 1;
    }
    let mut v: Vec<_> = agg.into_iter().collect();
    v.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    for (k, (t, c)) in v.iter().take(45) {
        println!("{:8.2} ms x{c:<4} {k}", t * 1e3);
    }
}
