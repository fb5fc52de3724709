//! Scratch: which reductions row fusion absorbed.
use dino::bench::workloads::{build, Workload};
use dino_runtime::backend::cpu::CpuCompiler;
use dino_runtime::backend::fused::FusedOp;
use luminal::prelude::*;

fn main() {
    let mut b = build(Workload::BlockFwdbwd).unwrap();
    b.cx.compile(<CpuCompiler>::default(), &mut b.outputs);
    let (mut with, mut red) = (0, 0);
    for n in b.cx.graph.node_indices() {
        if let Some(f) = b.cx.graph.node_weight(n).unwrap().as_any().downcast_ref::<FusedOp>() {
            if !f.stages.is_empty() {
                with += 1;
                println!(
                    "stages {} in {:?} dims {:?} reduce {:?}",
                    f.stages.len(),
                    &f.label[..f.label.len().min(80)],
                    f.dims,
                    f.reduce
                );
            }
            if f.reduce.is_some() {
                red += 1;
                let cons: Vec<String> =
                    b.cx.get_dests(n).iter().map(|(_, o)| format!("{:?}", o).chars().take(40).collect()).collect();
                println!("reduce kernel {:?} dims {:?} -> {:?}", f.reduce, f.dims, cons);
            }
        }
    }
    println!("{with} kernels with stages, {red} reduce kernels");
}
