//! `dino inspect`: the graph before and after each compiler pass.
use std::path::PathBuf;

use crate::inspect::{inspect, GraphKind, InspectOptions};
use clap::Args;
use dino_runtime::backend::{Builtin, Passes};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The preset (`dino models` lists them); a DINO preset for `--graph train-step`.
    #[arg(long, default_value = "fmnist-small")]
    pub model: String,
    /// Which graph: the backbone's forward pass or a whole DINO training step.
    #[arg(long, value_enum, default_value_t = GraphKind::TrainStep)]
    pub graph: GraphKind,
    /// Images per step (sizes in the summaries scale with it).
    #[arg(long, default_value_t = 8, value_parser = crate::train::hyper::positive)]
    pub batch: usize,
    /// The passes to run, in pipeline order (default: every built-in pass).
    #[arg(long, value_delimiter = ',')]
    pub passes: Vec<String>,
    /// Also draw these groups node by node (names as in the collapsed drawing, e.g.
    /// `backbone.blocks.0`).
    #[arg(long, value_delimiter = ',')]
    pub expand: Vec<String>,
    /// Write the DOT files only (no Graphviz).
    #[arg(long)]
    pub no_render: bool,
    /// Print the summaries as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the drawings go.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: InspectArgs) -> Result<(), String> {
    let passes = if args.passes.is_empty() {
        Passes::standard()
    } else {
        let list: Vec<Builtin> = args
            .passes
            .iter()
            .map(|p| Builtin::parse(p).map_err(|e| format!("--passes: {e}")))
            .collect::<Result<_, _>>()?;
        Passes::only(&list)
    };
    let o = InspectOptions {
        model: &args.model,
        graph: args.graph,
        batch: args.batch,
        passes,
        out: &args.out,
        expand: &args.expand,
        render: !args.no_render,
    };
    let stages = inspect(&o, &mut |what| eprintln!("[inspect] {what}")).map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", serde_json::to_string(&stages).map_err(|e| e.to_string())?);
    } else {
        for s in &stages {
            print!("{}", s.text());
        }
        eprintln!("wrote {} files to {}", stages.iter().map(|s| s.files.len()).sum::<usize>(), args.out.display());
    }
    Ok(())
}
