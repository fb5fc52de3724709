//! The `dino` command line.
pub mod bench;
pub mod models;

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
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Bench { which } => bench::run(which),
        Command::Models(args) => models::run(args),
    }
}
