//! The generated kernels, checked without a GPU: every fused kernel of a compiled ViT block
//! (forward and backward: LayerNorm and softmax stages, row and column reductions, GELU,
//! padded and sliced views) is printed, compiled with the host C compiler against
//! `HOST_PRELUDE`, run on random inputs and compared with the CPU kernel.
use std::path::PathBuf;
use std::process::Command;

use super::tests_support::block_kernels;
use super::*;
use crate::testing::Rng;

fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dino-cuda-codegen-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn generated_kernels_compute_what_the_cpu_kernels_compute() {
    let (split, _) = check_on_host(Tuning::default(), "default");
    assert_eq!(split, 0, "the test block's sums are too small to split");
}

/// The same with every sum of more than a few elements split over blocks (atomic adds into a
/// zeroed output; the host prelude's `atomicAdd` is a plain add, the output starts zeroed).
#[test]
fn split_reductions_compute_what_the_cpu_kernels_compute() {
    let (split, warp) = check_on_host(Tuning::exercise_all(), "split");
    assert!(split >= 10, "only {split} kernels split");
    assert!(warp >= 5, "only {warp} kernels with a warp per row");
}

/// Every block kernel generated with `tuning`, compiled with the host C compiler and run
/// against the CPU kernel; returns how many reductions were split and how many kernels give
/// rows a warp each.
fn check_on_host(tuning: Tuning, tag: &str) -> (usize, usize) {
    let kernels = block_kernels();
    assert!(kernels.len() > 20, "a block forward+backward has many fused kernels");
    let mut rng = Rng::new(11);
    let dir = scratch_dir(tag);
    let (mut split, mut warp) = (0, 0);
    // one C program: every kernel, and a main that runs kernel argv[1] on inputs read from
    // stdin (lengths first) and writes the output to stdout
    let mut src = String::from(HOST_PRELUDE);
    src.push_str("#include <stdio.h>\n#include <stdlib.h>\n");
    let mut cases = vec![];
    let (mut rows, mut flat, mut staged, mut outer) = (0, 0, 0, 0);
    for (i, (k, extents)) in kernels.iter().enumerate() {
        let ks = kernel_source_tuned(k, &format!("k{i}"), tuning);
        match ks.launch {
            Launch::Flat { .. } => flat += 1,
            Launch::Rows { split: s, warp: w, .. } => {
                rows += 1;
                split += (s > 1) as usize;
                warp += w as usize;
            }
        }
        staged += !k.stages.is_empty() as usize;
        outer += matches!(k.reduce, Some((a, _)) if a + 1 != k.dims.len()) as usize;
        src.push_str(&ks.code);
        let inputs: Vec<Vec<f32>> = extents.iter().map(|&n| rng.range(n, -2.0, 2.0)).collect();
        let mut want = vec![0f32; k.out_len()];
        let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
        k.run(&refs, &mut want);
        cases.push((inputs, want, ks));
    }
    src.push_str("int main(int argc, char** argv) {\n    int which = atoi(argv[1]);\n");
    src.push_str("    float* in[16]; long n; int nin; if (fread(&nin, 4, 1, stdin) != 1) return 2;\n");
    src.push_str("    for (int j = 0; j < nin; ++j) { if (fread(&n, 8, 1, stdin) != 1) return 2; in[j] = malloc(4 * n + 4); if (fread(in[j], 4, n, stdin) != (size_t)n) return 2; }\n");
    src.push_str(
        "    if (fread(&n, 8, 1, stdin) != 1) return 2; float* out = calloc(n + 1, 4);\n    switch (which) {\n",
    );
    for (i, (_, _, ks)) in cases.iter().enumerate() {
        let args: Vec<String> = (0..ks.n_inputs).map(|j| format!("in[{j}]")).chain(["out".into()]).collect();
        src.push_str(&format!("    case {i}: k{i}({}); break;\n", args.join(", ")));
    }
    src.push_str("    }\n    fwrite(out, 4, n, stdout);\n    return 0;\n}\n");
    let c = dir.join("kernels.c");
    std::fs::write(&c, &src).unwrap();
    let exe = dir.join("kernels");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args(["-std=c11", "-O1", "-w", "-o"])
        .arg(&exe)
        .arg(&c)
        .arg("-lm")
        .output()
        .unwrap_or_else(|e| panic!("the host C compiler `{cc}` is needed to check generated kernels: {e}"));
    assert!(st.status.success(), "generated C does not compile:\n{}", String::from_utf8_lossy(&st.stderr));

    let mut worst = 0f32;
    for (i, (inputs, want, ks)) in cases.iter().enumerate() {
        let mut stdin = (inputs.len() as i32).to_le_bytes().to_vec();
        for v in inputs {
            stdin.extend((v.len() as i64).to_le_bytes());
            stdin.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
        stdin.extend((want.len() as i64).to_le_bytes());
        let mut child = Command::new(&exe)
            .arg(i.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "kernel {i} failed");
        let got: Vec<f32> = o.stdout.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(got.len(), want.len());
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            let err = (g - w).abs() / (1.0 + w.abs());
            if err.is_finite() {
                worst = worst.max(err);
            }
            assert!(
                err <= 1e-5 || g == w || (g.is_nan() && w.is_nan()),
                "kernel {i} element {j}: {g} vs {w}\n{}",
                ks.code
            );
        }
    }
    eprintln!(
        "{} kernels ({flat} flat, {rows} row: {staged} with stages, {outer} outer reductions, {split} split, {warp} warp rows), \
         worst relative error {worst:.2e}",
        kernels.len()
    );
    assert!(flat > 0 && rows > 0 && staged > 0 && outer > 0, "every kernel shape is exercised");
    let _ = std::fs::remove_dir_all(dir);
    (split, warp)
}

#[test]
fn literals_round_trip_and_sources_are_stable() {
    for v in [0.1f32, -3.0, 1e-6, 1e20, f32::MIN_POSITIVE, 0.0, -0.0] {
        let s = float_lit(v);
        assert!(s.ends_with('f'), "{s}");
        let back: f32 = s.trim_end_matches('f').parse().unwrap();
        assert_eq!(back.to_bits(), v.to_bits(), "{s}");
    }
    assert_eq!(float_lit(f32::NEG_INFINITY), "__int_as_float((int)0xff800000u)");
    // the same kernel prints the same source (the runtime caches compiled modules by it)
    let k = &block_kernels()[0].0;
    assert_eq!(kernel_source(k, "k"), kernel_source(k, "k"));
    let cuda = kernel_source(k, "k");
    assert!(cuda.code.contains("DINO_KERNEL k(") && CUDA_PRELUDE.contains("__shfl_xor_sync"));
}

#[test]
fn launch_shapes() {
    assert_eq!(Launch::Flat { total: 1000 }.grid_block(132), (4, 256));
    assert_eq!(Launch::Flat { total: 1 << 30 }.grid_block(132), (132 * 32, 256));
    let rows = |rows, row_len, split| Launch::Rows { rows, row_len, split, zero: 0, warp: false };
    assert_eq!(rows(3200, 192, 1).grid_block(132), (3200, 192));
    assert_eq!(rows(10, 5, 1).grid_block(132), (10, 32));
    assert_eq!(rows(10, 65536, 1).grid_block(132), (10, 1024));
    assert_eq!(rows(1, 384, 1024).grid_block(132), (1024, 384));
    let warps = Launch::Rows { rows: 151296, row_len: 197, split: 1, zero: 0, warp: true };
    assert_eq!(warps.grid_block(132), (151296 / 8, 256));
}
