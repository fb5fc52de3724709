//! The `dino` binary: argument errors and a benchmark worker run.
use std::process::Command;

fn dino() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dino"))
}

#[test]
fn bad_arguments_are_rejected_with_a_message() {
    let out = dino().args(["bench", "engine", "--workload", "nope"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'nope'"), "{err}");
    assert!(err.contains("block-fwd"), "lists the workloads: {err}");
}

#[test]
fn benchmark_worker_reports_json() {
    let out = dino()
        .args(["bench", "worker", "--workload", "block-fwd", "--impl", "ours", "--runs", "1", "--warmup", "0"])
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(v["workload"], "block-fwd");
    assert!(v["step_s"].as_f64().unwrap() > 0.0);
    assert!(v["flops_per_step"].as_f64().unwrap() > 2.9e9, "one block forward is ~2.95 GFLOP");
    assert!(v["kernels"].as_u64().unwrap() > 0);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.last().unwrap()[0], "after row-fusion");
}
