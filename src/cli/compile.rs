//! `dino compile`: a preset's training step, or its backbone's forward pass (features,
//! tokens, attention), built, compiled and planned once, written as an artifact that `dino
//! train` / `dino features` / `dino attention --compiled` run with no graph built and no
//! passes at start; for `--device cuda --arch sm_XY` with its kernels as CUBIN and PTX.
use std::path::PathBuf;

use clap::Args;
use dino_runtime::model::{DinoModel, VitModel};

use super::common::GraphKind;
use crate::compiled::{self, CompileReport, ForwardGraph};
use crate::device::Device;
use crate::train::Hyper;

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The DINO preset (`dino models` lists them); for a forward graph also a backbone.
    #[arg(long, default_value = "fmnist-small")]
    pub model: String,
    #[arg(long, value_enum, default_value_t = GraphKind::TrainStep)]
    pub graph: GraphKind,
    /// The device the artifact is for.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// The GPU architecture the kernels are compiled for with --device cuda (a binary built
    /// with --features cuda; NVRTC, no GPU needed): `sm_90` (H100, H200), `sm_80` (A100),
    /// `sm_89` (L4). The file holds CUBIN for it and PTX that newer GPUs compile at load.
    #[arg(long)]
    pub arch: Option<String>,
    /// Worker threads used to compile [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// The artifact to write [default: <model>.dart].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A forward graph's image side in pixels [default: the model's native size]; `dino
    /// features` / `dino attention` must then run at this --size.
    #[arg(long, value_parser = crate::train::hyper::positive)]
    pub size: Option<usize>,
    /// A forward graph's LayerNorm epsilon, for weights trained with another one than the
    /// declaration's (`dino features --compiled` says which it needs when they differ).
    #[arg(long, value_parser = crate::train::hyper::finite)]
    pub norm_eps: Option<f64>,
    /// The training's hyperparameters, as `dino train` takes them: the batch and everything
    /// the graph is built from must be given again to `dino train --compiled`. A forward
    /// graph takes only --batch-size [default: 256 for features and tokens, 8 for attention].
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
    if let Some(graph) = args.graph.forward() {
        return forward(&args, graph, &out, target);
    }
    if args.size.is_some() || args.norm_eps.is_some() {
        return Err("--size and --norm-eps are for a forward graph (--graph features, tokens or attention); a \
                    training step's sizes are its crops'"
            .into());
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
    report(&args.model, &r, &out);
    Ok(())
}

fn report(model: &str, r: &CompileReport, out: &std::path::Path) {
    println!(
        "{}: {} kernels, arena {:.1} MB; built in {:.2} s, passes {:.2} s, planned {:.2} s; wrote {} ({:.1} MB)",
        model,
        r.kernels,
        r.arena_bytes as f64 * 1e-6,
        r.build_s,
        r.compile_s,
        r.plan_s,
        out.display(),
        r.bytes as f64 * 1e-6
    );
    if let Some(code) = &r.code {
        println!("{model}: {code}");
    }
}

/// A backbone's forward graph at one batch and size.
fn forward(
    args: &CompileArgs,
    graph: ForwardGraph,
    out: &std::path::Path,
    target: dino_runtime::artifact::Target,
) -> Result<(), String> {
    let batch = args.hyper.batch_size.unwrap_or(if graph == ForwardGraph::Attention { 8 } else { 256 });
    let rest = crate::train::Hyper { batch_size: None, ..args.hyper.clone() };
    if rest != crate::train::Hyper::default() {
        return Err(format!(
            "--graph {}: a forward graph takes --batch-size, --size and --norm-eps only; the training flags given \
             ({}) are for --graph train-step",
            graph.name(),
            serde_json::to_string(&rest).unwrap_or_default()
        ));
    }
    struct Fwd<'a>(&'a CompileArgs, ForwardGraph, usize, &'a std::path::Path, dino_runtime::artifact::Target);
    impl crate::models::VitVisitor for Fwd<'_> {
        type Output = dino_runtime::Result<CompileReport>;
        fn visit<V: VitModel>(self, _: &'static str) -> Self::Output {
            let Fwd(a, graph, batch, out, target) = self;
            let size = a.size.unwrap_or(V::IMAGE);
            compiled::compile_forward::<V>(graph, a.norm_eps.map(|e| e as f32), batch, size, target, out)
        }
    }
    let r = crate::models::with_vit(&args.model, Fwd(args, graph, batch, out, target))
        .ok_or_else(|| {
            format!(
                "model `{}`: no backbone or DINO preset of that name; choose one of {}",
                args.model,
                crate::models::vit_names().join(", ")
            )
        })?
        .map_err(|e| e.to_string())?;
    report(&args.model, &r, out);
    Ok(())
}
