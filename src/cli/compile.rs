//! `dino compile`: a preset's training step built, compiled and planned once, written as an
//! artifact that `dino train --compiled` runs with no graph building and no passes at start.
use std::path::PathBuf;

use clap::Args;
use dino_runtime::model::DinoModel;

use crate::compiled::{self, CompileReport};
use crate::device::Device;
use crate::train::Hyper;

/// Which graph to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphKind {
    /// The whole DINO training step (teacher, student, loss, backward, AdamW, EMA, center).
    TrainStep,
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The DINO preset (`dino models` lists them).
    #[arg(long, default_value = "fmnist-small")]
    pub model: String,
    #[arg(long, value_enum, default_value_t = GraphKind::TrainStep)]
    pub graph: GraphKind,
    /// The device the artifact is for.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// The GPU architecture (`sm_90`), for --device cuda.
    #[arg(long)]
    pub arch: Option<String>,
    /// Worker threads used to compile [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// The artifact to write [default: <model>.dart].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The training's hyperparameters, as `dino train` takes them: the batch and everything
    /// the graph is built from must be given again to `dino train --compiled`.
    #[command(flatten)]
    pub hyper: Hyper,
}

pub fn run(args: CompileArgs) -> Result<(), String> {
    super::common::set_threads(args.threads)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}.dart", args.model)));
    let target = compiled::target(args.device, args.arch.as_deref()).map_err(|e| e.to_string())?;
    struct Go<'a>(&'a CompileArgs, &'a std::path::Path, dino_runtime::artifact::Target);
    impl crate::models::DinoVisitor for Go<'_> {
        type Output = dino_runtime::Result<CompileReport>;
        fn visit<M: DinoModel>(self, _: &'static str) -> Self::Output {
            let cfg = self.0.hyper.apply(&M::CONFIG)?;
            compiled::compile_train_step::<M>(&self.0.model, cfg, self.2, self.1)
        }
    }
    let r = crate::models::with_dino(&args.model, Go(&args, &out, target))
        .ok_or_else(|| {
            format!(
                "model `{}`: not a DINO preset; choose one of {}",
                args.model,
                crate::models::dino_names().join(", ")
            )
        })?
        .map_err(|e| e.to_string())?;
    println!(
        "{}: {} kernels, arena {:.1} MB; built in {:.2} s, passes {:.2} s, planned {:.2} s; wrote {} ({:.1} MB)",
        args.model,
        r.kernels,
        r.arena_bytes as f64 * 1e-6,
        r.build_s,
        r.compile_s,
        r.plan_s,
        out.display(),
        r.bytes as f64 * 1e-6
    );
    Ok(())
}
