//! The pass ablation's table: each row's figures, as text and as a bar chart.
use dino_runtime::Result;
use serde::Serialize;

use crate::device::Device;

/// One row's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    pub name: String,
    /// The passes run, in order (`["stock luminal"]` for the stock row).
    pub passes: Vec<String>,
    /// Seconds per pass, and their sum.
    pub compile_s: Vec<(String, f64)>,
    pub compile_total_s: f64,
    /// Nodes of the compiled graph.
    pub nodes: usize,
    /// Steps of our executor's plan (kernels, GEMMs, constants, luminal operators left).
    pub kernels: Option<usize>,
    /// Median step time over every round's runs.
    pub step_s: Option<f64>,
    pub runs: Vec<f64>,
    pub gflops: Option<f64>,
    /// Peak live memory of the schedule (the planned arena).
    pub arena_mb: Option<f64>,
    /// Resident memory the first checked step added at its peak.
    pub step_peak_mb: Option<f64>,
    /// Largest difference of the step's results from the reference row's (the graph with no
    /// passes unless the table says otherwise), relative to
    /// `1 + max |reference|` of the tensor, and which tensor.
    pub max_error: Option<f64>,
    pub worst_tensor: Option<String>,
    /// Why the row has no figures (a pipeline the device cannot run, a failed step).
    pub failed: Option<String>,
}

impl RowResult {
    /// A row with no figures yet.
    pub(crate) fn new(name: String, passes: Vec<String>) -> RowResult {
        RowResult {
            name,
            passes,
            compile_s: vec![],
            compile_total_s: 0.0,
            nodes: 0,
            kernels: None,
            step_s: None,
            runs: vec![],
            gflops: None,
            arena_mb: None,
            step_peak_mb: None,
            max_error: None,
            worst_tensor: None,
            failed: None,
        }
    }

    pub(crate) fn failed(name: String, passes: Vec<String>, why: String) -> RowResult {
        RowResult { failed: Some(why), ..RowResult::new(name, passes) }
    }
}

/// The whole table.
#[derive(Debug, Clone, Serialize)]
pub struct Ablation {
    pub model: String,
    pub batch: usize,
    pub device: String,
    pub threads: usize,
    /// FLOPs of the step's matrix products.
    pub flops_per_step: f64,
    /// The row every other row's results are checked against (`no passes` unless that one
    /// was left out as too slow to run).
    pub reference: String,
    pub rows: Vec<RowResult>,
}

impl Ablation {
    /// The table as text.
    pub fn table(&self) -> String {
        let mut s = format!(
            "pass ablation: {} DINO step, batch {}, {} ({} threads), {:.2} GFLOP per step\n",
            self.model,
            self.batch,
            self.device,
            self.threads,
            self.flops_per_step / 1e9
        );
        if self.device != Device::Cpu.to_string() {
            s += "(the reference row runs on the cpu: its executor runs any graph)\n";
        }
        if self.reference != "no passes" {
            s += &format!("(max error against `{}`: the graph with no passes was not run)\n", self.reference);
        }
        s += &format!(
            "{:<22} {:>9} {:>7} {:>8} {:>11} {:>9} {:>10} {:>10} {:>10}\n",
            "pipeline", "compile s", "nodes", "kernels", "step ms", "GFLOP/s", "arena MB", "step RSS", "max error"
        );
        let opt = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
        for r in &self.rows {
            if let Some(why) = &r.failed {
                s += &format!("{:<22} failed: {why}\n", r.name);
                continue;
            }
            s += &format!(
                "{:<22} {:>9.2} {:>7} {:>8} {:>11} {:>9} {:>10} {:>10} {:>10}\n",
                r.name,
                r.compile_total_s,
                r.nodes,
                r.kernels.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
                opt(r.step_s.map(|x| x * 1e3), 1),
                opt(r.gflops, 2),
                opt(r.arena_mb, 1),
                opt(r.step_peak_mb, 1),
                r.max_error.map(|e| format!("{e:.1e}")).unwrap_or_else(|| "-".into()),
            );
        }
        s
    }

    /// A bar chart of the step times (PNG).
    pub fn chart(&self, path: &std::path::Path) -> Result<()> {
        let bars: Vec<(String, f64)> =
            self.rows.iter().filter_map(|r| r.step_s.map(|t| (r.name.clone(), t * 1e3))).collect();
        let title = format!("{} DINO step (batch {}, {}): time per pipeline", self.model, self.batch, self.device);
        crate::plot::bar_chart(path, &title, "step time (ms, log scale)", &bars)
    }
}
