//! Compile once, run anywhere with no compiler: the `fmnist-small` DINO training step is
//! built, compiled by every pass and planned into an artifact file (what `dino compile`
//! writes), then a training run is started from that file (what `dino train --compiled`
//! does): no graph is built and no pass runs at start. The run is checked against the same
//! run built at start: every loss and every tensor of the checkpoint equal, bit for bit. An
//! artifact asked for another batch is refused by name.
//!
//! `cargo run --release --example compile_artifact`
//!
//! Expected output (times vary with the machine):
//! ```text
//! compiled fmnist-small (batch 16): 1683 kernels, 0.8 MB artifact, built + passes + plan in 0.6 s
//! built at start:  ready in 460 ms, 8 steps, last loss 6.4265
//! from artifact:   ready in 4 ms, 8 steps, last loss 6.4265
//! identical: 8 losses, 343 checkpoint tensors
//! batch 32 refused: /tmp/.../fmnist-small.dart was compiled for batch 16, this run asks for 32: ...
//! ```
use std::path::{Path, PathBuf};
use std::time::Instant;

use dino::compiled::{compile_train_step, load_train_step};
use dino::dataset::DataSpec;
use dino::runtime::artifact::Target;
use dino::train::{checkpoint, train_model, Device, Hyper, RunConfig, TrainOptions};
use dino_models::FmnistSmall;

fn options(out: &Path, compiled: Option<PathBuf>, hyper: &Hyper) -> TrainOptions {
    let subset = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fmnist-subset");
    TrainOptions {
        run: RunConfig {
            preset: "fmnist-small".into(),
            data: DataSpec::Fmnist(Some(subset)),
            val: None,
            seed: 0,
            limit: Some(64),
            test_limit: None,
            knn: false,
            hyper: hyper.clone(),
            log_every: 1,
            save_every: 1,
            precision: Default::default(),
        },
        out: out.to_path_buf(),
        resume: false,
        force: true,
        stop_after: None,
        group: Default::default(),
        quiet: true,
        device: Device::Cpu,
        compiled,
    }
}

fn run() -> Result<(), String> {
    inner().map_err(|e| e.to_string())
}

fn inner() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("dino-example-artifact-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let hyper = Hyper { batch_size: Some(16), epochs: Some(2), ..Default::default() };
    let cfg = hyper.apply(&FmnistSmall::CONFIG)?;
    let artifact = dir.join("fmnist-small.dart");
    let t = Instant::now();
    let r = compile_train_step::<FmnistSmall>("fmnist-small", cfg, Target::Cpu, &artifact)?;
    println!(
        "compiled fmnist-small (batch 16): {} kernels, {:.1} MB artifact, built + passes + plan in {:.1} s",
        r.kernels,
        r.bytes as f64 * 1e-6,
        t.elapsed().as_secs_f64()
    );
    // start-up alone, both ways (the trainer does the same before its first step)
    let t = Instant::now();
    let mut jit = dino::runtime::dino::DinoStep::<FmnistSmall>::build_with(cfg, 16)?;
    jit.compile(dino::runtime::backend::Passes::default());
    jit.train.attach(Device::Cpu.executor(&jit.train.cx)?);
    let jit_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let _loaded = load_train_step::<FmnistSmall>(&artifact, "fmnist-small", cfg, Device::Cpu)?;
    let loaded_ms = t.elapsed().as_secs_f64() * 1e3;

    let a = train_model::<FmnistSmall>(&options(&dir.join("jit"), None, &hyper))?;
    let b = train_model::<FmnistSmall>(&options(&dir.join("compiled"), Some(artifact.clone()), &hyper))?;
    let last = |r: &dino::train::TrainReport| r.losses.last().map(|l| l.1).unwrap_or(f32::NAN);
    println!("built at start:  ready in {jit_ms:.0} ms, {} steps, last loss {:.4}", a.iterations, last(&a));
    println!("from artifact:   ready in {loaded_ms:.0} ms, {} steps, last loss {:.4}", b.iterations, last(&b));
    let (ta, _) = checkpoint::load(&a.checkpoint)?;
    let (tb, _) = checkpoint::load(&b.checkpoint)?;
    let same = a.losses == b.losses
        && ta.tensors.len() == tb.tensors.len()
        && ta.tensors.iter().zip(&tb.tensors).all(|(x, y)| x.0 == y.0 && x.1.data == y.1.data);
    if !same || a.iterations != 8 {
        return Err("the run from the artifact differs from the run built at start".into());
    }
    println!("identical: {} losses, {} checkpoint tensors", a.losses.len(), ta.tensors.len());
    let other = Hyper { batch_size: Some(32), ..hyper.clone() };
    match train_model::<FmnistSmall>(&options(&dir.join("refused"), Some(artifact), &other)) {
        Err(e) if e.to_string().contains("batch 16") => println!("batch 32 refused: {e}"),
        Err(e) => return Err(format!("refused for another reason: {e}").into()),
        Ok(_) => return Err("an artifact for batch 16 ran at batch 32".into()),
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // the ViT graph is deep: build it on a thread with room
    std::thread::Builder::new().stack_size(256 << 20).spawn(run)?.join().map_err(|_| "the example panicked")??;
    Ok(())
}
