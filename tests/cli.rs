//! The `dino` binary: argument errors and a benchmark worker run.
mod common;
use common::Scratch;
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

fn failure(args: &[&str]) -> String {
    let out = dino().args(args).output().unwrap();
    assert!(!out.status.success(), "`dino {}` must fail", args.join(" "));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn train_and_knn_reject_bad_arguments_naming_them() {
    let tmp = Scratch::unmade("cli");
    let out = tmp.to_str().unwrap();
    let e = failure(&["train", "--model", "nope", "--out", out]);
    assert!(e.contains("model `nope`") && e.contains("fmnist-small"), "{e}");
    let e = failure(&["train", "--data", "/no/such/folder", "--out", out]);
    assert!(e.contains("/no/such/folder") && e.contains("not a directory"), "{e}");
    let e = failure(&["train", "--threads", "0", "--out", out]);
    assert!(e.contains("--threads"), "{e}");
    let e = failure(&["train", "--lr", "fast"]);
    assert!(e.contains("invalid value 'fast'") && e.contains("--lr"), "{e}");
    let e = failure(&["train", "--global-crops-scale", "0.4"]);
    assert!(e.contains("--global-crops-scale"), "{e}");
    let e = failure(&["train", "--epochs", "0", "--data", "fmnist:tests/fixtures/fmnist-subset", "--out", out]);
    assert!(e.contains("--epochs"), "{e}");
    let e = failure(&["train", "--resume", "--out", out]);
    assert!(e.contains("checkpoint.safetensors"), "{e}");
    let e = failure(&["knn"]);
    assert!(e.contains("--checkpoint") && e.contains("--random-init"), "{e}");
    let bogus = tmp.join("bogus.safetensors");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(&bogus, b"not a checkpoint at all").unwrap();
    let e = failure(&["knn", "--checkpoint", bogus.to_str().unwrap()]);
    assert!(e.contains("bogus.safetensors") && e.contains("not a safetensors file"), "{e}");
}

#[test]
fn train_help_carries_the_reference_guidance() {
    let out = dino().args(["train", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in
        ["--teacher-temp", "0.07", "--momentum-teacher", "0.9995", "--clip-grad", "--freeze-last-layer", "--resume"]
    {
        assert!(help.contains(needle), "`dino train --help` mentions {needle}:\n{help}");
    }
}

#[test]
fn knn_of_a_random_init_on_the_fmnist_subset() {
    let out = dino()
        .args(["knn", "--random-init", "--data", "fmnist:tests/fixtures/fmnist-subset", "--json", "--threads", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!((v["train"].as_u64(), v["test"].as_u64()), (Some(512), Some(256)));
    let k20 = |key: &str| v[key].as_array().unwrap().iter().find(|r| r["k"] == 20).unwrap()["top1"].as_f64().unwrap();
    // a random ViT is better than chance (10%); raw pixels better still on this data
    assert!(k20("knn") > 20.0 && k20("raw_pixels") > k20("knn"), "{v}");
}

/// Every command that runs a network takes `--device`; `cuda` on a build without the backend
/// (or, with it, on a machine without a GPU) is refused at once with the one clear error,
/// before any data is read.
#[test]
fn every_network_command_takes_device_and_refuses_an_unusable_cuda_at_once() {
    let dir = Scratch::unmade("cli-device");
    let out = dir.join("run");
    let npy = dir.join("f.npy");
    let pictures = dir.join("attention");
    let (out, npy, pictures) = (out.to_str().unwrap(), npy.to_str().unwrap(), pictures.to_str().unwrap());
    let commands: [&[&str]; 7] = [
        &["train", "--model", "fmnist-tiny", "--data", "fmnist", "--out", out],
        &["knn", "--random-init", "--model", "fmnist-small"],
        &["linear", "--random-init", "--model", "fmnist-small"],
        &["features", "--random-init", "--model", "fmnist-small", "--data", "fmnist", "--out", npy],
        &["attention", "--random-init", "--model", "fmnist-small", "--fmnist", "1", "--out", pictures],
        &["supervised", "--model", "fmnist-small", "--epochs", "1"],
        &["bench", "engine", "--no-stock", "--no-torch"],
    ];
    for c in commands {
        let t = std::time::Instant::now();
        let mut args = c.to_vec();
        args.extend(["--device", "cuda"]);
        let e = failure(&args);
        if cfg!(feature = "cuda") {
            assert!(e.contains("CUDA"), "`dino {}`: {e}", args.join(" "));
        } else {
            assert!(e.contains("--device cuda") && e.contains("--features cuda"), "`dino {}`: {e}", args.join(" "));
        }
        assert!(t.elapsed().as_secs() < 20, "`dino {}` refused only after {:?}", args.join(" "), t.elapsed());
    }
    assert!(!dir.exists(), "nothing written");
}

/// Non-finite floats are refused by name, not dropped on the way to the run's config (before,
/// `--lr NaN` trained with the recipe's rate).
#[test]
fn non_finite_hyperparameters_are_refused_naming_the_flag() {
    for (flag, value) in [("--lr", "NaN"), ("--lr", "inf"), ("--teacher-temp=-inf", ""), ("--min-lr", "nan")] {
        let mut args = vec!["train", "--model", "fmnist-tiny", "--data", "fmnist", "--out", "/nonexistent/run", flag];
        if !value.is_empty() {
            args.push(value);
        }
        let e = failure(&args);
        let name = flag.split('=').next().unwrap();
        assert!(e.contains(name) && e.contains("not a finite number"), "`{}`: {e}", args.join(" "));
    }
    let e = failure(&["train", "--model", "fmnist-tiny", "--global-crops-scale", "0.3", "NaN"]);
    assert!(e.contains("--global-crops-scale") && e.contains("not a finite number"), "{e}");
    for t in ["--threshold=NaN", "--threshold=5", "--threshold=0", "--threshold=-0.5"] {
        let e = failure(&["attention", "--random-init", "--fmnist", "1", t]);
        assert!(e.contains("--threshold") && e.contains("is outside (0, 1]"), "{t}: {e}");
    }
}

/// Size flags are refused at 0 by name (before, `knn --batch 0` hung and `linear --batch-size 0`
/// answered about labels).
#[test]
fn zero_sizes_are_refused_naming_the_flag() {
    let cases: [&[&str]; 5] = [
        &["knn", "--random-init", "--batch", "0"],
        &["linear", "--random-init", "--batch-size", "0"],
        &["supervised", "--epochs", "0"],
        &["train", "--model", "fmnist-tiny", "--batch-size", "0"],
        &["features", "--random-init", "--data", "fmnist", "--out", "/nonexistent/f.npy", "--limit", "0"],
    ];
    for c in cases {
        let e = failure(c);
        let flag = c[c.len() - 2];
        assert!(e.contains(flag) && e.contains("must be at least 1"), "`dino {}`: {e}", c.join(" "));
    }
}

#[test]
fn inspect_and_bench_passes_name_a_bad_pass_or_model() {
    let dir = Scratch::unmade("cli-inspect");
    let out = dir.to_str().unwrap();
    let e = failure(&["inspect", "--passes", "gemm,fuse", "--out", out]);
    assert!(e.contains("--passes") && e.contains("fuse") && e.contains("row-fusion"), "{e}");
    let e = failure(&["inspect", "--model", "nope", "--out", out]);
    assert!(e.contains("nope") && e.contains("fmnist-small"), "{e}");
    let e = failure(&["bench", "passes", "--without", "nope"]);
    assert!(e.contains("--without") && e.contains("nope"), "{e}");
    let e = failure(&["bench", "passes", "--model", "vit-tiny-16", "--no-stock"]);
    assert!(e.contains("vit-tiny-16") && e.contains("DINO presets"), "{e}");
    let e = failure(&["bench", "passes", "--batch", "0"]);
    assert!(e.contains("--batch"), "{e}");
}

#[test]
fn inspect_prints_a_summary_per_stage() {
    let dir = Scratch::unmade("cli-inspect-ok");
    let out = dino()
        .args(["inspect", "--model", "fmnist-tiny", "--graph", "forward", "--batch", "1", "--no-render", "--out"])
        .arg(&*dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for stage in ["built", "dead-code", "cse", "gemm", "fusion", "row-fusion"] {
        assert!(text.lines().any(|l| l.starts_with(stage)), "{stage} missing:\n{text}");
    }
    assert!(text.contains("fused kernels") && text.contains("contractions"), "{text}");
    assert!(dir.join("05-row-fusion.dot").exists());
}

/// `dino models` lists the DINOv2 presets with the terms of their objectives and optimizer, and
/// `--ibot-weight` is refused on a preset without iBOT, naming the flag.
#[test]
fn models_list_dinov2s_terms_and_ibot_weight_needs_ibot() {
    let out = dino().arg("models").output().expect("dino models");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or("").to_string();
    assert!(line("dinov2-vits14-reg4").contains("KoLeo 0.1, iBOT 1, layer decay 0.9, clip per module"), "{text}");
    assert!(line("fmnist-dinov2").contains("iBOT 1") && !line("fmnist-koleo").contains("iBOT"), "{text}");
    let e = failure(&["train", "--model", "fmnist-small", "--ibot-weight", "1", "--out", "/nonexistent/x"]);
    assert!(e.contains("--ibot-weight") && e.contains("declares no iBOT"), "{e}");
}

/// The tests' scratch folders: removed when the test passes, kept for a look when it fails.
#[test]
fn scratch_folders_go_when_a_test_passes_and_stay_when_it_fails() {
    let gone = {
        let s = Scratch::new("scratch-gone");
        std::fs::write(s.join("f"), "x").unwrap();
        s.to_path_buf()
    };
    assert!(!gone.exists(), "{}", gone.display());
    let failed = std::panic::catch_unwind(|| {
        let s = Scratch::new("scratch-kept");
        std::fs::write(s.join("f"), "x").unwrap();
        std::panic::panic_any(s.to_path_buf())
    });
    let kept = *failed.unwrap_err().downcast::<std::path::PathBuf>().unwrap();
    assert!(kept.join("f").is_file(), "{}", kept.display());
    std::fs::remove_dir_all(kept).unwrap();
}
