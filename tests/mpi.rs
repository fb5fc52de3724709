//! Data-parallel training over MPI processes (`--features mpi`; CI runs it after
//! scripts/get-mpi.sh): `mpirun -n 2 dino train` of fmnist-small, global batch 64, on the
//! committed Fashion-MNIST subset, against the 1-process run of the same global batch; bit
//! reproducibility; a run saved by 2 ranks resumed by 1; a rank killed or stopped mid-run.
//! The same semantics with the ranks as threads are `tests/data_parallel.rs`.
#![cfg(feature = "mpi")]
mod common;
use common::Scratch;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dino::runtime::tensors::TensorFile;
use dino::train::checkpoint;

fn out_dir(name: &str) -> Scratch {
    Scratch::unmade(&format!("mpi-{name}"))
}

fn subset() -> String {
    format!("fmnist:{}/tests/fixtures/fmnist-subset", env!("CARGO_MANIFEST_DIR"))
}

/// `dino train` of fmnist-small on the subset: 512 images, global batch 64 (8 steps an epoch).
fn train_args(out: &Path, epochs: usize) -> Vec<String> {
    let mut a: Vec<String> = ["train", "--model", "fmnist-small", "--batch-size", "64", "--log-every", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--data".into(), subset(), "--epochs".into(), epochs.to_string()]);
    a.extend(["--out".into(), out.display().to_string()]);
    a
}

/// `mpirun -n ranks` (as root, as CI is) of the test's `dino` binary.
fn mpirun(ranks: usize, args: &[String]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-n", &ranks.to_string(), "--oversubscribe", env!("CARGO_BIN_EXE_dino")]).args(args);
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

fn ok(what: &str, o: Output) -> Output {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn one_process(args: &[String]) -> Output {
    ok("dino train", Command::new(env!("CARGO_BIN_EXE_dino")).args(args).output().expect("run dino"))
}

fn two_ranks(args: &[String]) -> Output {
    ok("mpirun -n 2 dino train", mpirun(2, args).output().expect("run mpirun"))
}

/// (iteration, loss) of every step record of a run's log.
fn losses(out: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("log.jsonl"))
        .expect("log")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("iteration")?.as_u64()?, v.get("loss")?.as_f64()?)))
        .collect()
}

fn state(out: &Path) -> TensorFile {
    checkpoint::load(&out.join("checkpoint.safetensors")).expect("checkpoint").0
}

/// Relative L2 distance of each part of two checkpoints; the worst and its part.
fn distance(a: &TensorFile, b: &TensorFile) -> (f64, &'static str) {
    let mut worst = (0f64, "");
    for part in ["student.", "teacher.", "optimizer.", "center"] {
        let (mut num, mut den) = (0f64, 0f64);
        for (name, t) in b.tensors.iter().filter(|(n, _)| n.starts_with(part)) {
            for (x, y) in a.tensors[name].data.iter().zip(&t.data) {
                num += ((x - y) as f64).powi(2);
                den += (*y as f64).powi(2);
            }
        }
        let d = (num / den.max(1e-30)).sqrt();
        if d > worst.0 || d.is_nan() {
            worst = (d, part);
        }
    }
    worst
}

/// Per-step losses within 1e-5 relative and every part of the state within 1e-4 relative L2:
/// the tolerance of the summation order (each rank sums its 32 images, then the two halves
/// are added); measured ~1e-7 for both (`tests/data_parallel.rs` shows a new seed moves them
/// by 1e-1 and 1).
fn assert_same_run(what: &str, got: &Path, want: &Path) {
    let (a, b) = (losses(got), losses(want));
    assert_eq!(a.len(), b.len(), "{what}: {} step records, expected {}", a.len(), b.len());
    let mut worst = 0f64;
    for ((i, x), (j, y)) in a.iter().zip(&b) {
        assert_eq!(i, j, "{what}: step records out of order");
        worst = worst.max((x - y).abs() / y.abs());
    }
    let (d, part) = distance(&state(got), &state(want));
    eprintln!("{what}: losses {worst:.2e} relative at worst, state {d:.2e} relative L2 ({part})");
    assert!(worst <= 1e-5, "{what}: a loss differs by {worst:.2e} relative");
    assert!(d <= 1e-4, "{what}: the {part} state differs by {d:.2e} relative L2");
}

#[test]
fn two_mpi_ranks_train_as_one_process_and_repeat_bit_for_bit() {
    let one = out_dir("one");
    let two = out_dir("two");
    let again = out_dir("again");
    one_process(&train_args(&one, 1));
    let o = two_ranks(&train_args(&two, 1));
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("64 per step over 2 ranks"), "{text}");
    assert_eq!(text.matches("fmnist-small: 512 images").count(), 1, "rank 0 alone prints: {text}");
    assert_same_run("2 MPI ranks vs 1 process", &two, &one);
    two_ranks(&train_args(&again, 1));
    assert_eq!(losses(&again), losses(&two), "a 2-rank run repeats its losses bit for bit");
    assert_eq!(state(&again).tensors, state(&two).tensors, "and its state");
    // the same 2 ranks as threads of this process (tests/data_parallel.rs's transport): the
    // same bits, whatever carries them
    let threads = out_dir("threads");
    let ranks = dino::runtime::dist::LocalGroup::ranks(2, Duration::from_secs(300));
    let jobs: Vec<_> = ranks
        .into_iter()
        .map(|r| {
            let mut o = common::mini::subset_options("fmnist-small", &threads, 0);
            (o.run.hyper.batch_size, o.run.hyper.epochs, o.run.save_every) = (Some(64), Some(1), 20);
            o.group = dino::runtime::dist::Group(std::sync::Arc::new(r));
            std::thread::Builder::new().stack_size(256 << 20).spawn(move || dino::train::train(&o).map(drop)).unwrap()
        })
        .collect();
    for j in jobs {
        j.join().unwrap().expect("a rank thread trains");
    }
    assert_eq!(losses(&threads), losses(&two), "ranks as threads: the MPI run's losses bit for bit");
    assert_eq!(state(&threads).tensors, state(&two).tensors, "and its state");
    let config = std::fs::read_to_string(two.join("config.json")).unwrap();
    assert!(config.contains("\"ranks\": 2"), "{config}");
}

#[test]
fn a_run_saved_by_two_ranks_resumes_on_one() {
    let whole = out_dir("whole");
    let parts = out_dir("parts");
    one_process(&train_args(&whole, 1));
    let mut first = train_args(&parts, 1);
    first.extend(["--stop-after".into(), "4".into()]);
    two_ranks(&first);
    let mut rest = train_args(&parts, 1);
    rest.push("--resume".into());
    one_process(&rest);
    assert_same_run("2 ranks for 4 steps, then 1 process", &parts, &whole);
}

/// Start a 3-epoch 2-rank run, wait for its first checkpoint, then do `fault` to rank 1:
/// the job must end (no hang) with a non-zero status, and the checkpoint survives.
fn faulted(name: &str, fault: &str, timeout_env: Option<&str>) -> (String, Scratch) {
    let out = out_dir(name);
    let mut c = mpirun(2, &train_args(&out, 3));
    if let Some(t) = timeout_env {
        c.env("DINO_DIST_TIMEOUT", t);
    }
    let mut child = c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("mpirun");
    let t0 = Instant::now();
    while !out.join("checkpoint.safetensors").exists() {
        assert!(t0.elapsed() < Duration::from_secs(600), "no checkpoint after 10 minutes");
        std::thread::sleep(Duration::from_millis(200));
    }
    // rank 1: the dino process with OMPI_COMM_WORLD_RANK=1 among this mpirun's children
    let pids = String::from_utf8(Command::new("pgrep").args(["-P", &child.id().to_string()]).output().unwrap().stdout)
        .unwrap();
    let rank1 = pids
        .split_whitespace()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|e| e.split(|b| *b == 0).any(|kv| kv == b"OMPI_COMM_WORLD_RANK=1"))
        })
        .unwrap_or_else(|| panic!("no rank 1 among mpirun's children {pids:?}"))
        .to_string();
    Command::new("kill").args([fault, &rank1]).status().unwrap();
    let t_fault = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t_fault.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{name}: the job still runs 120 s after `kill {fault}` of rank 1");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{name}: the job ended successfully after `kill {fault}`:\n{err}");
    (err, out)
}

#[test]
fn a_rank_that_dies_or_hangs_ends_every_rank_and_the_checkpoint_survives() {
    let (err, out) = faulted("killed", "-KILL", None);
    assert!(err.contains("rank 1") && err.contains("signal 9"), "the launcher names the dead rank:\n{err}");
    let (_, meta) = checkpoint::load(&out.join("checkpoint.safetensors")).expect("the last checkpoint loads");
    assert!(meta.iteration >= 8 && meta.iteration % 8 == 0, "{meta:?}");
    // a stopped rank (alive, never answering): rank 0's watchdog ends the run, naming what it waited for
    let (err, out) = faulted("stopped", "-STOP", Some("5"));
    assert!(err.contains("rank 0 of 2") && err.contains("no answer from the other ranks in 5 s"), "{err}");
    checkpoint::load(&out.join("checkpoint.safetensors")).expect("the last checkpoint loads");
}

/// Launcher variables that MPI does not confirm (a process started by hand with a launcher's
/// environment) are refused naming both views, and other commands refuse to run N times.
#[test]
fn a_launch_that_mpi_does_not_see_is_refused() {
    let out = out_dir("mismatch");
    let o = Command::new(env!("CARGO_BIN_EXE_dino"))
        .args(train_args(&out, 1))
        .env("SLURM_PROCID", "1")
        .env("SLURM_NTASKS", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("srun (Slurm) says this is rank 1 of 2, MPI sees rank 0 of 1"),
        "{err}"
    );
    assert!(!out.join("config.json").exists(), "nothing written");
    let o =
        mpirun(2, &["knn".into(), "--random-init".into(), "--model".into(), "fmnist-small".into()]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("only `dino train` runs data-parallel"), "{err}");
}
