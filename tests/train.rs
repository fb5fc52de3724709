//! The trainer end to end on real Fashion-MNIST images (a committed subset of 512 training
//! and 256 test images): a smoke run that stays finite, below ln K and uncollapsed, exact resume, a
//! diverging run that stops with the last good checkpoint kept, and the guards around the
//! output directory and checkpoints.
use std::path::Path;

use dino::dataset::DataSpec;
use dino::train::log::{self, Record};
use dino::train::{checkpoint, train_model, Device, Hyper, RunConfig, TrainOptions};

mod common;
use common::mini::{subset_options, MiniDino, MiniVit};
use common::Scratch;

fn out_dir(name: &str) -> Scratch {
    Scratch::unmade(&format!("train-{name}"))
}

fn options(preset: &str, out: &Path, limit: Option<usize>, knn: bool, hyper: Hyper) -> TrainOptions {
    let mut o = subset_options(preset, out, 3);
    (o.run.limit, o.run.knn, o.run.hyper) = (limit, knn, hyper);
    o
}

/// Without the CUDA backend compiled in, `--device cuda` says how to get it.
#[cfg(not(feature = "cuda"))]
#[test]
fn training_on_cuda_without_the_backend_is_a_clear_error() {
    let out = out_dir("nocuda");
    let opts = TrainOptions { device: Device::Cuda, ..options("mini", &out, Some(16), false, Hyper::default()) };
    let e = train_model::<MiniDino>(&opts).unwrap_err().to_string();
    assert!(e.contains("--device cuda") && e.contains("--features cuda"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn smoke_training_on_real_images_runs_without_collapse() {
    let out = out_dir("smoke");
    let hyper = Hyper { batch_size: Some(32), ..Default::default() };
    let r = dino::train::train(&options("fmnist-small", &out, None, true, hyper)).unwrap();
    assert_eq!(r.iterations, 2 * 512 / 32);
    let records = log::read(&out.join("log.jsonl")).unwrap();
    let steps: Vec<_> = records.iter().filter_map(|r| if let Record::Step(s) = r { Some(s) } else { None }).collect();
    assert_eq!(steps.len(), r.iterations);
    let ln_k = (1024f64).ln();
    for s in &steps {
        assert!(s.loss.is_finite() && s.loss < ln_k, "iteration {}: loss {} vs ln K {ln_k}", s.iteration, s.loss);
    }
    let last = steps.last().unwrap();
    eprintln!(
        "smoke: first loss {:.4}, last {:.4}, teacher entropy {:.3}, mean-output entropy {:.3}, knn {:?}, raw {:?}",
        steps[0].loss, last.loss, last.teacher_entropy, last.teacher_mean_entropy, r.knn, r.raw_knn
    );
    // no collapse: the teacher neither puts every image on one prototype (the entropy of its
    // mean output would fall towards 0) nor goes uniform (its own entropy would reach ln K)
    assert!(last.teacher_mean_entropy > 3.0, "collapsed to few prototypes: {}", last.teacher_mean_entropy);
    assert!(last.teacher_entropy < ln_k - 0.3, "uniform collapse: {}", last.teacher_entropy);
    // k-NN was evaluated at random init and after both epochs, raw pixels at the end
    assert_eq!(r.knn.iter().map(|k| k.0).collect::<Vec<_>>(), [0, 1, 2]);
    let top1 = |k: &[dino::eval::KnnResult]| k.iter().find(|x| x.k == 20).unwrap().top1;
    assert!(top1(&r.knn[2].1) > 30.0, "k-NN far above chance (10%) after training: {:?}", r.knn[2]);
    assert!(top1(r.raw_knn.as_ref().unwrap()) > 50.0);
    // training time leaves every k-NN evaluation out: the epoch records' wall clock minus their
    // training time is the evaluation time so far (random init, then each epoch's), and the
    // report's evaluation time adds the raw-pixel baseline run after the last epoch record
    let epochs: Vec<_> = records.iter().filter_map(|r| if let Record::Epoch(e) = r { Some(e) } else { None }).collect();
    assert_eq!(epochs.len(), 3);
    let (e1, e2) = (epochs[1], epochs[2]);
    assert!(0.0 < e1.train_s && e1.train_s < e2.train_s && e2.train_s <= r.train_s, "{epochs:?} {r:?}");
    let (ev1, ev2) = (e1.elapsed_s - e1.train_s, e2.elapsed_s - e2.train_s);
    assert!(0.0 < ev1 && ev1 < ev2 && ev2 < r.eval_s, "evaluation seconds {ev1} {ev2} {}", r.eval_s);
    let imgs = (r.iterations * 32) as f64;
    assert!(
        (r.images_per_s * r.train_s - imgs).abs() < 1e-6 * imgs,
        "{} images/s over {} s",
        r.images_per_s,
        r.train_s
    );
    for f in ["config.json", "log.jsonl", "loss.png", "checkpoint.safetensors", "checkpoint0001.safetensors"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let (_, meta) = checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    assert_eq!((meta.iteration, meta.epoch(), meta.preset.as_str()), (32, 2, "fmnist-small"));
    let png = image::open(out.join("loss.png")).unwrap();
    assert_eq!((png.width(), png.height()), (960, 600));
}

fn losses(out: &Path) -> Vec<(usize, f64)> {
    log::read(&out.join("log.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| if let Record::Step(s) = r { Some((s.iteration, s.loss)) } else { None })
        .collect()
}

#[test]
fn resumed_run_continues_exactly() {
    let whole = out_dir("whole");
    let r = train_model::<MiniDino>(&options("mini", &whole, Some(64), false, Hyper::default())).unwrap();
    assert_eq!(r.iterations, 8);
    // interrupted mid-epoch (after iteration 5 of 8), then resumed
    let parts = out_dir("parts");
    let first = TrainOptions { stop_after: Some(5), ..options("mini", &parts, Some(64), false, Hyper::default()) };
    let r1 = train_model::<MiniDino>(&first).unwrap();
    assert_eq!(r1.iterations, 5);
    let again = TrainOptions { resume: true, ..options("mini", &parts, Some(64), false, Hyper::default()) };
    let r2 = train_model::<MiniDino>(&again).unwrap();
    assert_eq!(r2.losses.first().map(|l| l.0), Some(5));
    // the resumed run's losses are the uninterrupted run's, bit for bit, and so is the log
    let want: Vec<(usize, f32)> = r.losses[5..].to_vec();
    assert_eq!(r2.losses, want);
    assert_eq!(losses(&parts), losses(&whole));
    let (a, _) = checkpoint::load(&whole.join("checkpoint.safetensors")).unwrap();
    let (b, _) = checkpoint::load(&parts.join("checkpoint.safetensors")).unwrap();
    assert_eq!(a.tensors, b.tensors, "same final student, teacher, optimizer state and center");
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let out = out_dir("diverge");
    // one step per epoch; the cosine "decay" from 0 to 1e38 sends the weights to infinity
    // from the second iteration on
    let hyper =
        Hyper { lr: Some(0.0), min_lr: Some(1e38), warmup_epochs: Some(0.0), epochs: Some(6), ..Default::default() };
    let e = train_model::<MiniDino>(&options("mini", &out, Some(16), false, hyper)).unwrap_err().to_string();
    assert!(e.contains("the loss is") && e.contains("training stopped") && e.contains("the last checkpoint"), "{e}");
    let (_, meta) = checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    let failed_at: usize = e.split("at iteration ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert_eq!(meta.iteration, failed_at, "the checkpoint is the one before the non-finite step");
    assert!(e.contains(&format!("(iteration {failed_at})")), "{e}");
}

#[test]
fn output_directory_and_checkpoint_guards() {
    let out = out_dir("guards");
    let opts = TrainOptions { stop_after: Some(1), ..options("mini", &out, Some(16), false, Hyper::default()) };
    train_model::<MiniDino>(&opts).unwrap();
    // a second fresh run would overwrite the checkpoint: refused
    let e = train_model::<MiniDino>(&opts).unwrap_err().to_string();
    assert!(e.contains("already holds a checkpoint") && e.contains("--resume"), "{e}");
    // resuming with other hyperparameters is refused
    let other = Hyper { lr: Some(1.0), ..Default::default() };
    let e = train_model::<MiniDino>(&TrainOptions { resume: true, ..options("mini", &out, Some(16), false, other) })
        .unwrap_err()
        .to_string();
    assert!(e.contains("--lr 1.0") && e.contains("continues exactly"), "{e}");
    // a corrupt checkpoint is named, not a crash
    let ck = out.join("checkpoint.safetensors");
    let bytes = std::fs::read(&ck).unwrap();
    std::fs::write(&ck, &bytes[..bytes.len() / 3]).unwrap();
    let e = train_model::<MiniDino>(&TrainOptions { resume: true, ..opts.clone() }).unwrap_err().to_string();
    assert!(e.contains("checkpoint.safetensors"), "{e}");
    // resuming where there is nothing
    let empty = out_dir("guards-empty");
    let e = train_model::<MiniDino>(&TrainOptions {
        resume: true,
        ..options("mini", &empty, Some(16), false, Hyper::default())
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("checkpoint.safetensors"), "{e}");
    // an unknown preset names the choices
    let e = dino::train::train(&options("fmnist-huge", &empty, None, false, Hyper::default())).unwrap_err().to_string();
    assert!(e.contains("fmnist-small"), "{e}");
}

/// A checkpoint whose tensors were changed after it was written (resealed when `reseal`, so
/// that only the later checks can catch it).
fn tamper(path: &Path, reseal: bool, edit: impl FnOnce(&mut dino_runtime::tensors::TensorFile)) {
    let mut f = dino_runtime::tensors::TensorFile::load(path).unwrap();
    edit(&mut f);
    if reseal {
        checkpoint::seal(&mut f);
    }
    f.save(path).unwrap();
}

fn first_step_run(name: &str) -> (Scratch, TrainOptions) {
    let out = out_dir(name);
    let opts = TrainOptions { stop_after: Some(1), ..options("mini", &out, Some(32), false, Hyper::default()) };
    train_model::<MiniDino>(&opts).unwrap();
    (out, TrainOptions { resume: true, stop_after: Some(2), ..opts })
}

#[test]
fn damaged_checkpoints_are_refused_naming_the_tensor_and_the_file() {
    let (out, resume) = first_step_run("integrity");
    let ck = out.join("checkpoint.safetensors");
    let good = std::fs::read(&ck).unwrap();
    let name = "student.backbone.blocks.0.attn.qkv.weight";
    // one flipped bit in a tensor's bytes: the checksum
    tamper(&ck, false, |f| {
        let t = f.tensors.get_mut(name).unwrap();
        t.data[3] = f32::from_bits(t.data[3].to_bits() ^ 1);
    });
    let e = train_model::<MiniDino>(&resume).unwrap_err().to_string();
    assert!(e.contains(name) && e.contains("damaged") && e.contains("checkpoint.safetensors"), "{e}");
    // a tensor of NaN, checksums intact: finiteness
    std::fs::write(&ck, &good).unwrap();
    tamper(&ck, true, |f| f.tensors.get_mut("center").unwrap().data.fill(f32::NAN));
    let e = train_model::<MiniDino>(&resume).unwrap_err().to_string();
    assert!(e.contains("`center`") && e.contains("non-finite") && e.contains("checkpoint.safetensors"), "{e}");
    // the right number of values in the wrong (transposed) shape
    std::fs::write(&ck, &good).unwrap();
    tamper(&ck, true, |f| f.tensors.get_mut(name).unwrap().shape.reverse());
    let e = train_model::<MiniDino>(&resume).unwrap_err().to_string();
    assert!(e.contains(name) && e.contains("[32, 96]") && e.contains("needs [96, 32]"), "{e}");
    // evaluation checks every weight's full shape too
    let (f, _) = checkpoint::load(&ck).unwrap();
    let backbone: dino::eval::Weights = checkpoint::teacher_weights(&f)
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix("backbone.").map(|n| (n.to_string(), t)))
        .collect();
    let mut runner = dino::eval::VitRunner::<MiniVit>::new(dino::eval::Output::LastCls(1), None, Device::Cpu).unwrap();
    assert!(runner.set_weights(&backbone).is_ok(), "the teacher is intact");
    let mut student = backbone.clone();
    student.get_mut("blocks.0.attn.qkv.weight").unwrap().shape.reverse();
    let e = runner.set_weights(&student).unwrap_err().to_string();
    assert!(e.contains("blocks.0.attn.qkv.weight") && e.contains("[32, 96]"), "{e}");
    // the good file still resumes
    std::fs::write(&ck, &good).unwrap();
    assert_eq!(train_model::<MiniDino>(&resume).unwrap().iterations, 2);
}

#[test]
fn a_resumed_run_that_diverges_at_once_blames_the_checkpoint_not_the_learning_rate() {
    let (out, resume) = first_step_run("blame");
    // finite and sealed, but absurd: the first resumed step overflows
    tamper(&out.join("checkpoint.safetensors"), true, |f| {
        f.tensors.get_mut("student.backbone.patch_embed.proj.weight").unwrap().data.fill(3e38);
    });
    let e = train_model::<MiniDino>(&resume).unwrap_err().to_string();
    assert!(e.contains("first iteration after resuming") && e.contains("left as it was"), "{e}");
    assert!(!e.contains("last good checkpoint"), "{e}");
}

#[test]
fn resume_refuses_changes_that_alter_the_run_and_keeps_its_options() {
    let (out, resume) = first_step_run("changes");
    let with = |f: fn(&mut RunConfig)| {
        let mut o = resume.clone();
        f(&mut o.run);
        train_model::<MiniDino>(&o).unwrap_err().to_string()
    };
    let e = with(|r| r.seed = 4);
    assert!(e.contains("--seed 4 (the run has 3)"), "{e}");
    let e = with(|r| r.limit = Some(48));
    assert!(e.contains("--limit"), "{e}");
    let e = with(|r| r.data = DataSpec::Fmnist(None));
    assert!(e.contains("--data"), "{e}");
    // evaluation and logging options may change; the run's own are kept otherwise
    let mut o = resume.clone();
    o.run.save_every = 0;
    train_model::<MiniDino>(&o).unwrap();
    let (_, meta) = checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    let saved: RunConfig = serde_json::from_value(meta.run).unwrap();
    assert_eq!((saved.save_every, saved.log_every, saved.seed), (0, 1, 3));
}

#[test]
fn a_torn_last_log_line_is_dropped_on_resume() {
    let (out, resume) = first_step_run("torn");
    let log_path = out.join("log.jsonl");
    let mut text = std::fs::read_to_string(&log_path).unwrap();
    let whole = log::read(&log_path).unwrap().len();
    text.push_str(r#"{"event":"step","epoch":0,"itera"#);
    std::fs::write(&log_path, text).unwrap();
    assert_eq!(log::read(&log_path).unwrap().len(), whole, "the torn tail is set apart");
    assert_eq!(train_model::<MiniDino>(&resume).unwrap().iterations, 2);
    let after = std::fs::read_to_string(&log_path).unwrap();
    assert!(!after.contains("itera\"") && after.ends_with('\n'), "{after}");
    // a damaged line before the last is still an error naming the file and the line
    std::fs::write(&log_path, format!("not json\n{after}")).unwrap();
    let e = log::read(&log_path).unwrap_err().to_string();
    assert!(e.contains("log.jsonl") && e.contains("line 1"), "{e}");
}

#[test]
fn a_new_run_never_replaces_files_it_did_not_write() {
    let out = out_dir("foreign");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let opts = TrainOptions { stop_after: Some(1), ..options("mini", &out, Some(16), false, Hyper::default()) };
    let e = train_model::<MiniDino>(&opts).unwrap_err().to_string();
    assert!(e.contains("not empty") && e.contains("--force") && e.contains("notes.txt"), "{e}");
    // told to: the run goes beside the other files
    train_model::<MiniDino>(&TrainOptions { force: true, ..opts.clone() }).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    // a file of a run's name that is not ours is never replaced, even with --force
    let other = out_dir("foreign-log");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("log.jsonl"), "someone's log\n").unwrap();
    let o = TrainOptions { out: other.to_path_buf(), force: true, ..opts };
    let e = train_model::<MiniDino>(&o).unwrap_err().to_string();
    assert!(e.contains("log.jsonl") && e.contains("would be replaced"), "{e}");
    assert_eq!(std::fs::read_to_string(other.join("log.jsonl")).unwrap(), "someone's log\n");
}

/// The memory estimate that refuses absurd requests stays below what the engine really plans
/// for a step (it must never refuse a step that fits), within a factor of 4 (it must not miss
/// the order of magnitude). The planned arena is measured here, not written down.
#[test]
fn the_step_memory_estimate_is_a_lower_bound_of_the_planned_arena() {
    for batch in [8, 32] {
        let mut step = dino::runtime::dino::DinoStep::<MiniDino>::build(batch).unwrap();
        step.compile(dino::runtime::backend::Passes::default());
        let mut rt = Device::Cpu.executor(&step.train.cx).unwrap();
        rt.plan(&step.train.cx).unwrap();
        let planned = rt.stats().arena_bytes as u128;
        let est = MiniDino::CONFIG.step_bytes(batch);
        println!("batch {batch}: estimated {est} B, planned {planned} B");
        assert!(est < planned && 4 * est > planned, "batch {batch}: estimated {est}, planned {planned}");
    }
}
