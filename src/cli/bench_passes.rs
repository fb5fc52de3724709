//! `dino bench passes`: the pass ablation of a preset's training step from the command line
//! (the table itself is `crate::bench::passes`).
use std::path::PathBuf;

use clap::Args;

use crate::device::Device;

#[derive(Debug, Args)]
pub struct PassesArgs {
    /// The DINO preset whose training step is compiled (`dino models` lists them).
    #[arg(long, default_value = "fmnist-small")]
    pub model: String,
    /// Images per step.
    #[arg(long, default_value_t = 16, value_parser = crate::train::hyper::positive)]
    pub batch: usize,
    /// Where our pipelines run (stock luminal runs on the CPU).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Timed steps per pipeline per round.
    #[arg(long, default_value_t = 3, value_parser = crate::train::hyper::positive)]
    pub runs: usize,
    /// Untimed steps per pipeline before the first round.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Rounds; each runs every pipeline in turn, so machine noise hits them alike.
    #[arg(long, default_value_t = 3, value_parser = crate::train::hyper::positive)]
    pub rounds: usize,
    /// Only these rows' passes switched off (default: each built-in pass in turn).
    #[arg(long, value_delimiter = ',')]
    pub without: Vec<String>,
    /// Add a row of every pass with this storage precision (the precision pass), e.g. bf16:
    /// its error against the unoptimized graph is the precision's. On the CPU bf16 is
    /// emulated (f32 storage, each bf16 store rounded): its time is not bf16's speed.
    #[arg(long, value_delimiter = ',')]
    pub precision: Vec<dino_runtime::backend::plan::Precision>,
    /// Skip the stock luminal row (it interprets the graph on one thread: slow).
    #[arg(long)]
    pub no_stock: bool,
    /// A pipeline whose first (cold) step takes longer than this many seconds is timed by
    /// that step alone; raise it for a big step (a ViT-S/16) so every row is timed warm.
    #[arg(long, default_value_t = crate::bench::passes::SLOW_STEP_S, value_parser = crate::train::hyper::positive_f64)]
    pub slow_step: f64,
    /// Give up on the stock luminal row's one step after this many seconds.
    #[arg(long, default_value_t = 300, value_parser = crate::train::hyper::positive)]
    pub stock_timeout: usize,
    /// The row every other row is checked against: the graph with no passes (exact, but tens
    /// of seconds a step for a ViT-S/16), or every pass (then the no-pass row is not run).
    #[arg(long, value_enum, default_value_t = ReferenceRow::NoPasses)]
    pub reference: ReferenceRow,
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write `passes.json` and the bar chart `passes.png` here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Which row of `dino bench passes` the others are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReferenceRow {
    /// The unoptimized graph (the definition of correct).
    NoPasses,
    /// Every pass (each row's error is then its difference from the full pipeline).
    AllPasses,
}

pub(super) fn bench_passes(args: PassesArgs) -> Result<(), String> {
    use crate::bench::passes::{ablate_against, standard_rows, AblationOptions, Row};
    use dino_runtime::backend::{Builtin, Passes};
    args.device.check().map_err(|e| e.to_string())?;
    let mut rows = if args.without.is_empty() {
        standard_rows(!args.no_stock)
    } else {
        let mut rows = vec![Row::ours("all passes", Passes::standard()), Row::ours("no passes", Passes::none())];
        for name in &args.without {
            let b = Builtin::parse(name).map_err(|e| format!("--without: {e}"))?;
            rows.push(Row::ours(
                format!("without {b}"),
                Passes::standard().without(b.name()).map_err(|e| e.to_string())?,
            ));
        }
        if !args.no_stock {
            rows.push(Row::stock());
        }
        rows
    };
    for p in &args.precision {
        if *p != dino_runtime::backend::plan::Precision::Fp32 {
            rows.push(Row::with_policy(dino_runtime::backend::plan::Policy::of(*p)));
        }
    }
    let opts = AblationOptions {
        batch: args.batch,
        runs: args.runs,
        warmup: args.warmup,
        rounds: args.rounds,
        device: args.device,
        stock_timeout_s: args.stock_timeout as u64,
        slow_step_s: args.slow_step,
    };
    let reference = match args.reference {
        ReferenceRow::NoPasses => "no passes",
        ReferenceRow::AllPasses => {
            rows.retain(|r| r.name != "no passes");
            "all passes"
        }
    };
    let reference = rows.iter().position(|r| r.name == reference).expect("the reference row is among the rows");
    let table = ablate_against(&args.model, rows, reference, opts, &mut |what| eprintln!("[bench passes] {what}"))
        .map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", serde_json::to_string(&table).map_err(|e| e.to_string())?);
    } else {
        print!("{}", table.table());
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let json = serde_json::to_vec_pretty(&table).map_err(|e| e.to_string())?;
        dino_runtime::files::write_atomic(&dir.join("passes.json"), &json).map_err(|e| e.to_string())?;
        table.chart(&dir.join("passes.png")).map_err(|e| e.to_string())?;
        eprintln!("wrote {} and {}", dir.join("passes.json").display(), dir.join("passes.png").display());
    }
    Ok(())
}
