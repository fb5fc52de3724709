//! The `dino` command line.
pub mod attention;
pub mod bench;
#[cfg(feature = "cuda")]
pub mod bench_gpu;
pub mod bench_passes;
pub mod common;
pub mod compile;
pub mod features;
pub mod inspect;
pub mod knn;
pub mod linear;
pub mod models;
pub mod plot;
pub mod supervised;
pub mod train;

use clap::{Parser, Subcommand};

/// DINO self-supervised learning of Vision Transformers, on luminal graphs compiled to fast
/// CPU code.
#[derive(Debug, Parser)]
#[command(name = "dino", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The model zoo: every declared backbone and DINO recipe with its parameter counts
    /// (`dino models NAME` prints one declaration as JSON).
    Models(models::ModelsArgs),
    /// DINO self-supervised training: multi-crop, momentum teacher, centering and sharpening,
    /// one compiled graph per step; logs, loss plot, checkpoints, optional k-NN per epoch; on
    /// one process or data-parallel under `mpirun`/`srun`.
    #[command(after_long_help = train::DATA_PARALLEL_HELP)]
    Train(Box<train::TrainArgs>),
    /// Weighted k-NN accuracy of a checkpoint's teacher (or of a random initialization), with
    /// the raw-pixel baseline.
    Knn(knn::KnnArgs),
    /// The last block's [CLS] self-attention as pictures (per head, mean, 60%-mass masks) for
    /// images of any size, and its Jaccard index with the foreground on Fashion-MNIST.
    Attention(Box<attention::AttentionArgs>),
    /// The supervised baseline: the same backbone trained with labels (cross-entropy) on
    /// Fashion-MNIST, saved in official names.
    Supervised(supervised::SupervisedArgs),
    /// Linear probe: a linear classifier on frozen features (last-4-block [CLS] tokens),
    /// trained with SGD on the engine.
    Linear(Box<linear::LinearArgs>),
    /// Redraw a run's loss and k-NN plots from its log.jsonl.
    Plot(plot::PlotArgs),
    /// Export [CLS] (or all token) features of a dataset as .npy or .safetensors.
    Features(Box<features::FeaturesArgs>),
    /// The graph of a preset before and after each compiler pass: DOT drawings collapsed per
    /// block (Graphviz renders them when installed) and per-pass summaries.
    Inspect(inspect::InspectArgs),
    /// Compile a preset's training step once into an artifact (plan, kernels, parameter
    /// layout, config) that `dino train --compiled` runs with no graph building or passes.
    Compile(Box<compile::CompileArgs>),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<(), String> {
    // only training runs over ranks: N copies of another command would do its work N times
    // (and write the same files at once)
    if !matches!(cli.command, Command::Train(_)) {
        let launch = dino_runtime::dist::Launch::from_env().map_err(|e| e.to_string())?;
        if launch.world > 1 {
            return Err(format!(
                "started by {} as rank {} of {}: only `dino train` runs data-parallel; run this command as one process",
                launch.launcher, launch.rank, launch.world
            ));
        }
    }
    match cli.command {
        Command::Bench { which } => bench::run(which),
        Command::Models(args) => models::run(args),
        Command::Train(args) => train::run(*args),
        Command::Knn(args) => knn::run(args),
        Command::Attention(args) => attention::run(*args),
        Command::Supervised(args) => supervised::run(args),
        Command::Linear(args) => linear::run(*args),
        Command::Plot(args) => plot::run(args),
        Command::Features(args) => features::run(*args),
        Command::Inspect(args) => inspect::run(args),
        Command::Compile(args) => compile::run(*args),
    }
}

pub use common::set_threads;
