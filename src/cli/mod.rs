//! The `dino` command line.
pub mod bench;

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
    }
}
