//! `cargo bench`: the engine workloads on our CPU pipeline (for the comparison with stock
//! luminal and PyTorch, run `dino bench engine`).
use dino::bench::{measure, Impl, Workload};

fn main() {
    for w in [Workload::BlockFwd, Workload::BlockFwdbwd, Workload::DinoStep] {
        match measure(w, Impl::Ours, 2, 5, dino::device::Device::Cpu) {
            Ok(m) => println!(
                "{:<14} median {:>8.2} ms  {:>6.1} GFLOP/s  peak RSS {:>6.0} MB  {} kernels  compile {:.2} s",
                m.workload,
                m.step_s * 1e3,
                m.gflops,
                m.peak_rss_mb,
                m.kernels.unwrap_or(0),
                m.compile_total_s
            ),
            Err(e) => println!("{}: {e}", w.name()),
        }
    }
}
