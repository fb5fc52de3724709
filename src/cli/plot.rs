//! `dino plot`: redraw a run's pictures from its log: the loss, the collapse diagnostics and
//! the k-NN accuracy over the epochs.
use std::path::PathBuf;

use clap::Args;

use crate::train::log;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A training output directory (with log.jsonl).
    pub run: PathBuf,
}

pub fn run(args: PlotArgs) -> Result<(), String> {
    let records = log::read(&args.run.join("log.jsonl")).map_err(|e| e.to_string())?;
    if records.is_empty() {
        return Err(format!("{}: no log.jsonl records", args.run.display()));
    }
    // titled by the run's preset, as the trainer titles them; by the directory without one
    let preset = std::fs::read_to_string(args.run.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.pointer("/run/preset").and_then(|p| p.as_str()).map(str::to_string));
    let name = preset.or_else(|| args.run.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
    let loss = args.run.join("loss.png");
    crate::plot::loss_plot(&loss, &records, &format!("DINO {name} training loss")).map_err(|e| e.to_string())?;
    println!("{}", loss.display());
    let diag = args.run.join("diagnostics.png");
    crate::plot::diagnostics_plot(&diag, &records, &format!("DINO {name}")).map_err(|e| e.to_string())?;
    println!("{}", diag.display());
    let knn = args.run.join("knn.png");
    match crate::plot::knn_plot(&knn, &records, &format!("DINO {name}: weighted k-NN of the teacher")) {
        Ok(()) => println!("{}", knn.display()),
        Err(e) => eprintln!("note: {e}"),
    }
    Ok(())
}
