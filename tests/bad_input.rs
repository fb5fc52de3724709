//! The bad-input suite: the release habits of a trusted tool, checked against the `dino`
//! binary. Every case gives a bad flag, a damaged file, a file from a stranger or a fault, and
//! asserts three things: the exit status (2 for a command line clap refuses, 1 for an input
//! the program refuses; never an abort or a panic), a message that names the input (the flag,
//! the file, the tensor), and that every file that was there before is still there, byte for
//! byte. Weights from strangers have their own file, `tests/bad_weights.rs`.
mod common;

use std::path::Path;
use std::process::Command;

use common::cli_cases::*;

use dino_runtime::tensors::TensorFile;
/// A real run of fmnist-small (one step) in `run/` of the folder: the checkpoint the cases damage.
fn trained_run() -> common::Scratch {
    let d = scratch("run");
    let out = dino(
        &d,
        &["train", "--data", &subset(), "--limit", "64", "--epochs", "2", "--stop-after", "1", "--out", "run"]
            .map(String::from),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d
}

/// Rewrite a checkpoint's tensors (resealed: only the later checks can catch the change).
fn tamper(path: &Path, reseal: bool, edit: impl FnOnce(&mut TensorFile)) {
    let mut f = TensorFile::load(path).unwrap();
    edit(&mut f);
    if reseal {
        dino::train::checkpoint::seal(&mut f);
    }
    f.save(path).unwrap();
}
#[test]
fn flags_out_of_range_are_refused_by_name() {
    let d = scratch("flags");
    let data = subset();
    let t = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["train", "--data", data.as_str(), "--out", "r"].map(String::from).to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases = vec![
        case("lr NaN", &t(&["--lr", "NaN"]), USAGE, &["--lr", "NaN"]),
        case("lr inf", &t(&["--lr", "inf"]), USAGE, &["--lr", "inf"]),
        case("min-lr nan", &t(&["--min-lr", "nan"]), USAGE, &["--min-lr"]),
        case("momentum word", &t(&["--momentum-teacher", "high"]), USAGE, &["--momentum-teacher", "high"]),
        case("epochs 0", &t(&["--epochs", "0"]), USAGE, &["--epochs"]),
        case("batch 0", &t(&["--batch-size", "0"]), USAGE, &["--batch-size"]),
        case("limit 0", &t(&["--limit", "0"]), USAGE, &["--limit"]),
        case("log-every 0", &t(&["--log-every", "0"]), USAGE, &["--log-every"]),
        case("negative epochs", &t(&["--epochs", "-3"]), USAGE, &["--epochs"]),
        case("one crop scale", &t(&["--global-crops-scale", "0.5"]), USAGE, &["--global-crops-scale"]),
        case("crop scale reversed", &t(&["--global-crops-scale", "0.9", "0.2"]), REFUSED, &["global crop scale"]),
        case("device", &t(&["--device", "tpu"]), USAGE, &["--device", "tpu"]),
        case("threads 0", &t(&["--threads", "0"]), REFUSED, &["--threads"]),
        case("teacher temp 0", &t(&["--teacher-temp", "0"]), REFUSED, &["teacher temperature"]),
        case("drop path 1", &t(&["--drop-path-rate", "1"]), REFUSED, &["drop path rate"]),
        case("unknown model", &t(&["--model", "vit-huge"]), REFUSED, &["vit-huge", "fmnist-small"]),
        case(
            "teacher warmup past the end",
            &t(&["--warmup-teacher-temp-epochs", "5"]),
            REFUSED,
            &["--warmup-teacher-temp-epochs", "--epochs"],
        ),
        case("resume and config", &t(&["--resume", "--config", "c.json"]), USAGE, &["--resume", "--config"]),
        case("missing config", &t(&["--config", "nope.json"]), REFUSED, &["nope.json"]),
        case("knn batch 0", &["knn", "--random-init", "--batch", "0"], USAGE, &["--batch"]),
        case("knn test-limit 0", &["knn", "--random-init", "--test-limit", "0"], USAGE, &["--test-limit"]),
        case("knn nothing", &["knn"], REFUSED, &["--checkpoint", "--random-init"]),
        case("linear batch 0", &["linear", "--random-init", "--batch-size", "0"], USAGE, &["--batch-size"]),
        case("threshold NaN", &["attention", "--random-init", "--threshold", "NaN"], USAGE, &["--threshold"]),
        case("threshold 5", &["attention", "--random-init", "--threshold", "5"], USAGE, &["--threshold", "(0, 1]"]),
        case("attention nothing", &["attention", "--random-init"], REFUSED, &["--image", "--fmnist"]),
        case(
            "features format",
            &["features", "--random-init", "--data", &data, "--out", "f.csv"],
            REFUSED,
            &["f.csv", ".npy"],
        ),
        case(
            "features size",
            &["features", "--random-init", "--data", &data, "--size", "30", "--out", "f.npy"],
            REFUSED,
            &["--size 30", "4 px", "28"],
        ),
        case("bench workload", &["bench", "engine", "--workload", "nope"], USAGE, &["nope", "block-fwd"]),
    ];
    let n = run_cases(&d, cases);
    assert!(!d.join("r").exists(), "no run directory for a refused run");
    println!("{n} flag cases");
}

#[test]
fn absurd_sizes_are_refused_up_front_never_aborted() {
    let d = scratch("sizes");
    let data = subset();
    let cases = vec![
        case("epochs 1e12", &["train", "--data", &data, "--epochs", "1000000000000"], REFUSED, &["--epochs", "memory"]),
        case(
            "epochs overflow",
            &["train", "--data", &data, "--epochs", "18446744073709551615"],
            REFUSED,
            &["--epochs", "64-bit"],
        ),
        case(
            "local crops",
            &["train", "--data", &data, "--local-crops-number", "100000"],
            REFUSED,
            &["--local-crops-number 100000", "memory"],
        ),
        case("batch past the data", &["train", "--data", &data, "--batch-size", "100000"], REFUSED, &["100000", "512"]),
        case(
            "attention size",
            &["attention", "--random-init", "--fmnist", "1", "--fmnist-dir", &data[7..], "--size", "100000"],
            REFUSED,
            &["--size 100000", "memory"],
        ),
        case(
            "features size",
            &["features", "--random-init", "--data", &data, "--size", "100000", "--out", "f.npy"],
            REFUSED,
            &["--size 100000", "memory"],
        ),
    ];
    println!("{} size cases", run_cases(&d, cases));
}

#[test]
fn damaged_data_is_named() {
    let d = scratch("data");
    let fx = root().join("tests/fixtures/fmnist-subset");
    let set = |name: &str, edit: &dyn Fn(&Path)| -> String {
        let dir = d.join(name);
        copy_dir(&fx, &dir);
        edit(&dir);
        format!("fmnist:{}", dir.display())
    };
    let truncated = set("truncated", &|p| {
        let f = p.join("train-images-idx3-ubyte.gz");
        let b = std::fs::read(&f).unwrap();
        std::fs::write(&f, &b[..b.len() / 2]).unwrap();
    });
    let garbage =
        set("garbage", &|p| std::fs::write(p.join("train-labels-idx1-ubyte.gz"), b"not an idx file").unwrap());
    let overflow = set("overflow", &|p| {
        let mut h = vec![0, 0, 8, 3];
        h.extend([0xff; 12]);
        std::fs::write(p.join("train-images-idx3-ubyte.gz"), h).unwrap();
    });
    let empty = set("empty", &|p| {
        let mut h = vec![0, 0, 8, 3];
        for v in [0u32, 28, 28] {
            h.extend(v.to_be_bytes());
        }
        std::fs::write(p.join("train-images-idx3-ubyte.gz"), h).unwrap();
    });
    let labels = set("labels", &|p| {
        let mut h = vec![0, 0, 8, 1];
        h.extend(512u32.to_be_bytes());
        h.extend([200u8; 512]);
        std::fs::write(p.join("train-labels-idx1-ubyte.gz"), h).unwrap();
    });
    let few_labels = set("few-labels", &|p| {
        let mut h = vec![0, 0, 8, 1];
        h.extend(3u32.to_be_bytes());
        h.extend([1u8; 3]);
        std::fs::write(p.join("train-labels-idx1-ubyte.gz"), h).unwrap();
    });
    std::fs::create_dir_all(d.join("imgs/empty-folder")).unwrap();
    std::fs::write(d.join("imgs/broken.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
    std::fs::write(d.join("imgs/empty.jpg"), b"").unwrap();
    std::fs::write(d.join("imgs/text.png"), b"hello").unwrap();
    let img = |p: &str| -> Vec<String> {
        ["attention", "--random-init", "--image", p, "--out", "att"].map(String::from).to_vec()
    };
    let cases = vec![
        case("no folder", &["train", "--data", "/no/such/folder"], REFUSED, &["/no/such/folder"]),
        case("no fmnist", &["train", "--data", "fmnist:/no/such"], REFUSED, &["/no/such", "get-fmnist.sh"]),
        case("truncated gzip", &["train", "--data", &truncated], REFUSED, &["truncated", "train-images-idx3-ubyte.gz"]),
        case("garbage labels", &["train", "--data", &garbage], REFUSED, &["train-labels-idx1-ubyte.gz", "IDX"]),
        case("overflowing header", &["train", "--data", &overflow], REFUSED, &["train-images-idx3-ubyte.gz", "16 GiB"]),
        case("no images", &["train", "--data", &empty], REFUSED, &["train-images-idx3-ubyte.gz", "no images"]),
        case("label out of range", &["train", "--data", &labels], REFUSED, &["train-labels-idx1-ubyte.gz", "200"]),
        case("label count", &["train", "--data", &few_labels], REFUSED, &["train-labels-idx1-ubyte.gz", "3 labels"]),
        case("empty image folder", &["train", "--data", "imgs/empty-folder"], REFUSED, &["imgs/empty-folder"]),
        case("broken png", &img("imgs/broken.png"), REFUSED, &["imgs/broken.png"]),
        case("empty jpg", &img("imgs/empty.jpg"), REFUSED, &["imgs/empty.jpg"]),
        case("text as png", &img("imgs/text.png"), REFUSED, &["imgs/text.png"]),
        case("missing image", &img("imgs/none.png"), REFUSED, &["imgs/none.png"]),
        case("val folder", &["knn", "--random-init", "--data", &subset(), "--val", "/no/val"], REFUSED, &["/no/val"]),
    ];
    println!("{} data cases", run_cases(&d, cases));
}

#[test]
fn damaged_checkpoints_and_runs_are_named_and_kept() {
    let d = scratch("ckpt");
    let trained = trained_run();
    let run = &trained.join("run");
    let data = subset();
    let make = |name: &str, edit: &dyn Fn(&Path)| -> String {
        let dir = d.join(name);
        copy_dir(run, &dir);
        edit(&dir.join("checkpoint.safetensors"));
        name.to_string()
    };
    let q = "student.backbone.blocks.0.attn.qkv.weight";
    let truncated = make("truncated", &|c| {
        let b = std::fs::read(c).unwrap();
        std::fs::write(c, &b[..b.len() / 3]).unwrap();
    });
    let flipped = make("flipped", &|c| {
        tamper(c, false, |f| {
            let t = f.tensors.get_mut(q).unwrap();
            t.data[7] = f32::from_bits(t.data[7].to_bits() ^ 0x10);
        })
    });
    let nan = make("nan", &|c| tamper(c, true, |f| f.tensors.get_mut("center").unwrap().data[0] = f32::NAN));
    let transposed = make("transposed", &|c| tamper(c, true, |f| f.tensors.get_mut(q).unwrap().shape.reverse()));
    let missing = make("missing", &|c| {
        tamper(c, true, |f| {
            f.tensors.remove("center");
        })
    });
    let format = make("format", &|c| {
        tamper(c, true, |f| {
            let m = f.metadata.get_mut("dino").unwrap();
            *m = m.replace("dino-checkpoint/2", "dino-checkpoint/9");
        })
    });
    let meta = make("meta", &|c| tamper(c, true, |f| *f.metadata.get_mut("dino").unwrap() = "{ not json".into()));
    let log = make("log", &|c| {
        let l = c.with_file_name("log.jsonl");
        let text = std::fs::read_to_string(&l).unwrap();
        std::fs::write(&l, format!("{{\"broken\n{text}")).unwrap();
    });
    let fresh = make("fresh", &|_| {});
    std::fs::create_dir_all(d.join("empty")).unwrap();
    std::fs::create_dir_all(d.join("foreign")).unwrap();
    std::fs::write(d.join("foreign/thesis.tex"), "mine").unwrap();
    std::fs::create_dir_all(d.join("foreign-log")).unwrap();
    std::fs::write(d.join("foreign-log/log.jsonl"), "mine\n").unwrap();
    std::fs::copy(root().join("tests/fixtures/weights/timm.safetensors"), d.join("timm.safetensors")).unwrap();
    std::fs::write(d.join("garbage.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\xffgarbage").unwrap();
    let resume = |dir: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["train", "--resume", "--out", dir].map(String::from).to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let c = |name, args: Vec<String>, exit, names: &[&str]| Case {
        name,
        args,
        exit,
        names: names.iter().map(|s| s.to_string()).collect(),
    };
    let knn = |ck: &str| {
        ["knn", "--checkpoint", ck, "--data", &data, "--limit", "64", "--test-limit", "16"].map(String::from).to_vec()
    };
    let cases = vec![
        c("nothing to resume", resume("empty", &[]), REFUSED, &["empty/checkpoint.safetensors"]),
        c("truncated", resume(&truncated, &[]), REFUSED, &["truncated/checkpoint.safetensors"]),
        c("flipped bit", resume(&flipped, &[]), REFUSED, &["flipped/checkpoint.safetensors", q, "damaged"]),
        c("NaN", resume(&nan, &[]), REFUSED, &["nan/checkpoint.safetensors", "`center`", "non-finite"]),
        c("transposed", resume(&transposed, &[]), REFUSED, &["transposed/checkpoint.safetensors", q, "shape"]),
        c("missing tensor", resume(&missing, &[]), REFUSED, &["missing/checkpoint.safetensors", "center"]),
        c("format", resume(&format, &[]), REFUSED, &["format/checkpoint.safetensors", "dino-checkpoint/9"]),
        c("metadata", resume(&meta, &[]), REFUSED, &["meta/checkpoint.safetensors", "metadata"]),
        c("torn log middle", resume(&log, &[]), REFUSED, &["log/log.jsonl", "line 1"]),
        c("changed seed", resume(&fresh, &["--seed", "9"]), REFUSED, &["--seed 9", "the run has 0"]),
        c("changed data", resume(&fresh, &["--data", "fmnist"]), REFUSED, &["--data"]),
        c("changed limit", resume(&fresh, &["--limit", "128"]), REFUSED, &["--limit"]),
        c("changed lr", resume(&fresh, &["--lr", "0.1"]), REFUSED, &["--lr 0.1"]),
        c("changed model", resume(&fresh, &["--model", "fmnist-tiny"]), REFUSED, &["--model", "fmnist-tiny"]),
        c(
            "fresh over a run",
            ["train", "--data", &data, "--out", &fresh].map(String::from).to_vec(),
            REFUSED,
            &["already holds a checkpoint", "--resume"],
        ),
        c(
            "foreign directory",
            ["train", "--data", &data, "--out", "foreign"].map(String::from).to_vec(),
            REFUSED,
            &["--out foreign", "thesis.tex", "--force"],
        ),
        c(
            "foreign log with force",
            ["train", "--data", &data, "--out", "foreign-log", "--force"].map(String::from).to_vec(),
            REFUSED,
            &["log.jsonl", "would be replaced"],
        ),
        c(
            "knn flipped",
            knn(&format!("{flipped}/checkpoint.safetensors")),
            REFUSED,
            &["flipped/checkpoint.safetensors", q],
        ),
        c("knn not ours", knn("timm.safetensors"), REFUSED, &["timm.safetensors", "not a dino checkpoint"]),
        c("knn garbage", knn("garbage.safetensors"), REFUSED, &["garbage.safetensors"]),
        c("knn missing", knn("none.safetensors"), REFUSED, &["none.safetensors"]),
        c(
            "features wrong key",
            [
                "features",
                "--checkpoint",
                &format!("{fresh}/checkpoint.safetensors"),
                "--key",
                "nope",
                "--data",
                &data,
                "--out",
                "f.npy",
            ]
            .map(String::from)
            .to_vec(),
            REFUSED,
            &["nope.backbone."],
        ),
    ];
    println!("{} checkpoint cases", run_cases(&d, cases));
}
#[test]
fn a_run_killed_mid_write_resumes_and_leaves_no_torn_file() {
    let d = scratch("kill");
    let data = subset();
    let args = [
        "train",
        "--data",
        &data,
        "--limit",
        "128",
        "--epochs",
        "6",
        "--save-every",
        "1",
        "--log-every",
        "1",
        "--out",
        "run",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_dino"))
        .current_dir(&d)
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // kill -9 once the first checkpoint is there, in the middle of the training
    let ck = d.join("run/checkpoint.safetensors");
    let t0 = std::time::Instant::now();
    while !ck.exists() && t0.elapsed().as_secs() < 600 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // every checkpoint there is whole (temporary files aside, which are never read)
    for e in std::fs::read_dir(d.join("run")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && !name.starts_with('.') {
            dino::train::checkpoint::load(&e.path()).unwrap_or_else(|err| panic!("{name}: {err}"));
        }
    }
    let mut resume: Vec<&str> = args.to_vec();
    resume.push("--resume");
    let out = dino(&d, &resume.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, meta) = dino::train::checkpoint::load(&ck).unwrap();
    assert_eq!(meta.iteration, 12, "6 epochs of 2 steps");
    assert!(d.join("run/checkpoint0006.safetensors").exists());
}
