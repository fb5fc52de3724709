//! Scratch: throughput of the fused-kernel interpreter.
use std::time::Instant;

use dino::runtime::backend::cpu::fused::FusedKernel;
use dino::runtime::backend::fused::FusedOp;
use dino::runtime::backend::ir::{BinaryOp, ProgramBuilder, UnaryOp};
use dino::runtime::backend::layout::Layout;

fn main() {
    direct();
    let n = 3200 * 768;
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.001).collect();
    for (name, unary) in [
        ("mul-add chain", None),
        ("exp2 chain", Some(UnaryOp::Exp2)),
        ("log2 chain", Some(UnaryOp::Log2)),
        ("sin chain", Some(UnaryOp::Sin)),
        ("recip chain", Some(UnaryOp::Recip)),
        ("sqrt chain", Some(UnaryOp::Sqrt)),
    ] {
        let mut b = ProgramBuilder::default();
        let mut r = b.load(0);
        let len = 32;
        for i in 0..len {
            let c = b.constant(1.0 + i as f32 * 1e-3);
            r = match unary {
                Some(u) if i % 4 == 0 => b.unary(u, r),
                _ if i % 2 == 0 => b.binary(BinaryOp::Mul, r, c),
                _ => b.binary(BinaryOp::Add, r, c),
            };
        }
        let program = b.finish(r);
        let op = FusedOp {
            program,
            stages: vec![],
            dims: vec![],
            reduce: None,
            fills: vec![0.0],
            label: String::new(),
            dyn_map: std::ptr::null(),
        };
        let k = FusedKernel::new(&op, &[n], &[Layout::contiguous(&[n])]);
        let mut out = vec![0f32; n];
        k.run(&[&x], &mut out);
        let mut best = f64::MAX;
        for _ in 0..10 {
            let t = Instant::now();
            k.run(&[&x], &mut out);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let ops = (n * op.program.instrs.len()) as f64;
        println!(
            "{name}: {:.2} ms, {:.3} ns/element, {:.2} G instr-elements/s",
            best * 1e3,
            best * 1e9 / n as f64,
            ops / best / 1e9
        );
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn exp2_direct(x: &[f32], o: &mut [f32]) {
    for (d, x) in o.iter_mut().zip(x) {
        *d = dino::runtime::backend::cpu::math::exp2(*x);
    }
}

#[allow(dead_code)]
fn direct() {
    let n = 3200 * 768;
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.001).collect();
    let mut o = vec![0f32; n];
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t = Instant::now();
        unsafe { exp2_direct(&x, &mut o) };
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("direct exp2 single thread: {:.3} ns/element", best * 1e9 / n as f64);
}
