//! `dino inspect`: the graph of a preset before and after each compiler pass, as DOT files
//! collapsed per block (and per block expanded on request), rendered by Graphviz when it is
//! installed, with a summary of each stage.
//!
//! ```text
//!   build (forward | train step) ─► stage 0 "built" ─► pass 1 ─► stage 1 ─► ... ─► stage n
//!                                      │                           │
//!                                      ├─ NN-stage.dot / .svg      (one box per group: a block,
//!                                      │                            the head, the optimizer...)
//!                                      ├─ NN-stage.GROUP.dot       (--expand GROUP: every node)
//!                                      └─ summary: nodes by kind, fused kernels and their sizes,
//!                                         contractions and shapes, FLOPs, bytes moved, peak
//!                                         live memory of the schedule, the pass's seconds
//! ```
//!
//! Groups: every node belongs to the group of the nearest named input above it (breadth-first
//! from every parameter and input at once): a parameter `backbone.blocks.3.attn.qkv.weight`
//! names the group `backbone.blocks.3`, so a block's forward and backward nodes, which read
//! that block's weights first, fall in that block's box. Constants join their first reader.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use dino_runtime::autograd::Prim;
use dino_runtime::backend::fused::FusedOp;
use dino_runtime::backend::gemm::GemmOp;
use dino_runtime::backend::passes::PassReport;
use dino_runtime::backend::plan::{Planner, Work};
use dino_runtime::backend::Passes;
use dino_runtime::{Error, Result};
use luminal::prelude::petgraph::visit::EdgeRef;
use luminal::prelude::petgraph::Direction;
use luminal::prelude::*;
use serde::Serialize;

use crate::bench::workloads::matmul_flops;

/// Which graph to inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum GraphKind {
    /// The backbone's forward pass (all tokens), at the preset's native image size.
    Forward,
    /// One whole DINO training step (a DINO preset): teacher, student, loss, backward,
    /// clipping, AdamW, EMA.
    TrainStep,
}

/// What one stage of the compilation looks like.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    /// `built`, or the pass that produced this stage.
    pub stage: String,
    /// Seconds the pass took (0 for `built`).
    pub seconds: f64,
    pub nodes: usize,
    /// Nodes by kind (`Mul`, `Fused`, `Gemm`, `input`, ...), most first.
    pub by_kind: Vec<(String, usize)>,
    /// Fused kernels and how many primitives each replaced: count, smallest, median, largest.
    pub fused: Option<(usize, usize, usize, usize)>,
    /// Contractions by shape (`batch x [m x n x k]`), most first.
    pub contractions: Vec<(String, usize)>,
    /// FLOPs of the matrix products (2 per multiply-add).
    pub flops: f64,
    /// Bytes every step reads and writes (each output once, each input view once, f32).
    pub bytes_moved: Option<f64>,
    /// Peak live memory of the schedule (the planned arena).
    pub arena_bytes: Option<usize>,
    /// Steps of the plan (kernels, products, primitives left).
    pub steps: Option<usize>,
    /// Groups of the collapsed drawing.
    pub groups: usize,
    /// Files written for this stage.
    pub files: Vec<PathBuf>,
}

/// A node's kind for the summaries.
fn kind(cx: &Graph, n: NodeIndex) -> String {
    let op = cx.graph.node_weight(n).expect("node");
    let any = op.as_any();
    if any.is::<FusedOp>() {
        return "Fused".into();
    }
    if any.is::<GemmOp>() {
        return "Gemm".into();
    }
    match Prim::of(op.as_ref()) {
        Some(Prim::Function) => "input".into(),
        Some(Prim::SumReduce(_)) => "SumReduce".into(),
        Some(Prim::MaxReduce(_)) => "MaxReduce".into(),
        Some(p) => format!("{p:?}"),
        None => format!("{op:?}").split(|c: char| !c.is_alphanumeric()).next().unwrap_or("?").to_string(),
    }
}

/// The group a parameter or input name stands for: up to `blocks.K`, else its first two parts.
pub fn group_of_name(name: &str) -> String {
    // an input's Debug is its name, then what it loads (`center Load`)
    let name = name.split_whitespace().next().unwrap_or(name);
    let parts: Vec<&str> = name.split('.').collect();
    if let Some(i) = parts.windows(2).position(|w| w[0] == "blocks" && w[1].parse::<usize>().is_ok()) {
        return parts[..i + 2].join(".");
    }
    parts[..parts.len().min(2)].join(".")
}

/// Every node's group (see the module documentation).
pub fn groups(cx: &Graph) -> HashMap<NodeIndex, String> {
    let mut group: HashMap<NodeIndex, String> = HashMap::new();
    let mut queue = VecDeque::new();
    for n in cx.graph.node_indices() {
        let op = cx.graph.node_weight(n).expect("node");
        if let Some(Prim::Function) = Prim::of(op.as_ref()) {
            group.insert(n, group_of_name(&format!("{op:?}")));
            queue.push_back(n);
        }
    }
    while let Some(n) = queue.pop_front() {
        let g = group[&n].clone();
        for e in cx.graph.edges_directed(n, Direction::Outgoing) {
            let t = e.target();
            if !group.contains_key(&t)
                && !matches!(Prim::of(cx.graph.node_weight(t).expect("node").as_ref()), Some(Prim::Constant))
            {
                group.insert(t, g.clone());
                queue.push_back(t);
            }
        }
    }
    for n in cx.graph.node_indices() {
        if group.contains_key(&n) {
            continue;
        }
        let reader = cx.graph.edges_directed(n, Direction::Outgoing).find_map(|e| group.get(&e.target()).cloned());
        group.insert(n, reader.unwrap_or_else(|| "constants".into()));
    }
    group
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph with one box per group: its node count and main kinds; edges counted.
pub fn collapsed_dot(cx: &Graph, groups: &HashMap<NodeIndex, String>, title: &str) -> String {
    let mut kinds: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for n in cx.graph.node_indices() {
        *kinds.entry(groups[&n].as_str()).or_default().entry(kind(cx, n)).or_default() += 1;
    }
    let mut edges: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for e in cx.graph.node_indices().flat_map(|n| cx.graph.edges_directed(n, Direction::Outgoing)) {
        let (a, b) = (groups[&e.source()].as_str(), groups[&e.target()].as_str());
        if a != b {
            *edges.entry((a, b)).or_default() += 1;
        }
    }
    let mut s = format!("digraph \"{}\" {{\n  label=\"{}\"; labelloc=t; rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n", dot_escape(title), dot_escape(title));
    for (g, k) in &kinds {
        let total: usize = k.values().sum();
        let mut top: Vec<(&String, &usize)> = k.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let desc: Vec<String> = top.iter().take(4).map(|(k, n)| format!("{n} {k}")).collect();
        s += &format!(
            "  \"{}\" [label=\"{}\\n{total} nodes: {}\"];\n",
            dot_escape(g),
            dot_escape(g),
            dot_escape(&desc.join(", "))
        );
    }
    for ((a, b), n) in &edges {
        s += &format!("  \"{}\" -> \"{}\" [label=\"{n}\"];\n", dot_escape(a), dot_escape(b));
    }
    s + "}\n"
}

/// Every node of one group, with the nodes outside it that it reads or feeds as ellipses.
pub fn group_dot(cx: &Graph, groups: &HashMap<NodeIndex, String>, group: &str, title: &str) -> Option<String> {
    let inside: Vec<NodeIndex> = cx.graph.node_indices().filter(|n| groups[n] == group).collect();
    if inside.is_empty() {
        return None;
    }
    let label = |n: NodeIndex| {
        let op = format!("{:?}", cx.graph.node_weight(n).expect("node"));
        let short: String = op.chars().take(60).collect();
        dot_escape(&short)
    };
    let mut s = format!(
        "digraph \"{}\" {{\n  label=\"{}\"; labelloc=t;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n",
        dot_escape(title),
        dot_escape(title)
    );
    let mut outside = std::collections::BTreeSet::new();
    for &n in &inside {
        s += &format!("  n{} [label=\"{}\"];\n", n.index(), label(n));
        for e in cx.graph.edges_directed(n, Direction::Incoming).chain(cx.graph.edges_directed(n, Direction::Outgoing))
        {
            for m in [e.source(), e.target()] {
                if groups[&m] != group {
                    outside.insert(m);
                }
            }
            if e.target() == n || groups[&e.target()] != group {
                s += &format!("  n{} -> n{};\n", e.source().index(), e.target().index());
            }
        }
    }
    for m in outside {
        s += &format!(
            "  n{} [shape=ellipse, style=dashed, label=\"{}\\n({})\"];\n",
            m.index(),
            label(m),
            dot_escape(&groups[&m])
        );
    }
    Some(s + "}\n")
}

/// The summary of one stage (planning it for the current dynamic dims).
pub fn summarize(cx: &Graph, stage: &str, seconds: f64) -> StageSummary {
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut fused_sizes = vec![];
    for n in cx.graph.node_indices() {
        *by_kind.entry(kind(cx, n)).or_default() += 1;
        if let Some(f) = cx.graph.node_weight(n).expect("node").as_any().downcast_ref::<FusedOp>() {
            fused_sizes.push(f.label.split('+').count());
        }
    }
    let mut by_kind: Vec<(String, usize)> = by_kind.into_iter().collect();
    by_kind.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    fused_sizes.sort();
    let fused = (!fused_sizes.is_empty()).then(|| {
        (fused_sizes.len(), fused_sizes[0], fused_sizes[fused_sizes.len() / 2], fused_sizes[fused_sizes.len() - 1])
    });
    let mut flops = matmul_flops(cx);
    let mut contractions: BTreeMap<String, usize> = BTreeMap::new();
    let (mut bytes_moved, mut arena_bytes, mut steps) = (None, None, None);
    if let Ok(plan) = Planner::new(cx).plan(cx) {
        let mut bytes = 0f64;
        for s in &plan.steps {
            if matches!(s.work, Work::Input { .. }) {
                continue;
            }
            bytes += plan.bytes_of(s) as f64;
            for (si, st) in s.srcs.iter().zip(&s.views) {
                let logical =
                    dino_runtime::backend::layout::Layout::of(st, &cx.dyn_map).map(|l| l.n_elements()).unwrap_or(0);
                let src = &plan.steps[*si];
                bytes += (logical.min(src.out_len.max(1)) * plan.storage.elem_bytes(src.dtype)) as f64;
            }
            if let Work::Gemm(g) = &s.work {
                let (b, m, n, k) = g.dims();
                *contractions.entry(format!("{b}x[{m}x{n}x{k}]")).or_default() += 1;
                flops += 2.0 * g.work() as f64;
            }
        }
        bytes_moved = Some(bytes);
        arena_bytes = Some(plan.arena_bytes);
        steps = Some(plan.steps.iter().filter(|s| !matches!(s.work, Work::Input { .. })).count());
    }
    let mut contractions: Vec<(String, usize)> = contractions.into_iter().collect();
    contractions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    StageSummary {
        stage: stage.to_string(),
        seconds,
        nodes: cx.graph.node_count(),
        by_kind,
        fused,
        contractions,
        flops,
        bytes_moved,
        arena_bytes,
        steps,
        groups: 0,
        files: vec![],
    }
}

/// Render `dot` to SVG and PNG beside it with Graphviz; the paths written, or why not.
pub fn render(dot: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    let mut out = vec![];
    for fmt in ["svg", "png"] {
        let target = dot.with_extension(fmt);
        let tmp = dot.with_extension(format!("{fmt}.tmp"));
        let status =
            Command::new("dot").arg(format!("-T{fmt}")).arg(dot).arg("-o").arg(&tmp).status().map_err(|e| {
                format!("Graphviz's `dot` cannot be run ({e}): install it with scripts/get-graphviz.sh")
            })?;
        if !status.success() {
            std::fs::remove_file(&tmp).ok();
            return Err(format!("`dot -T{fmt} {}` failed ({status})", dot.display()));
        }
        std::fs::rename(&tmp, &target).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        out.push(target);
    }
    Ok(out)
}

/// What to inspect and where to write it.
pub struct InspectOptions<'a> {
    pub model: &'a str,
    pub graph: GraphKind,
    pub batch: usize,
    pub passes: Passes,
    pub out: &'a Path,
    /// Groups to draw node by node as well.
    pub expand: &'a [String],
    /// Render with Graphviz (else the DOT files only).
    pub render: bool,
}

/// Write every stage's drawings and return their summaries; `progress` hears each stage.
pub fn inspect(o: &InspectOptions, progress: &mut dyn FnMut(&str)) -> Result<Vec<StageSummary>> {
    let io = |p: &Path, e: std::io::Error| Error::Io { path: p.to_path_buf(), source: e };
    std::fs::create_dir_all(o.out).map_err(|e| io(o.out, e))?;
    let mut stages = vec![];
    let mut failure: Option<Error> = None;
    let mut observe = |r: Option<&PassReport>, cx: &Graph| {
        if failure.is_some() {
            return;
        }
        let (name, seconds) = r.map(|r| (r.name.clone(), r.seconds)).unwrap_or(("built".into(), 0.0));
        let index = stages.len();
        progress(&format!("stage {index}: {name} ({} nodes)", cx.graph.node_count()));
        let mut s = summarize(cx, &name, seconds);
        let g = groups(cx);
        s.groups = g.values().collect::<std::collections::BTreeSet<_>>().len();
        let title = format!("{} {:?} after {name}: {} nodes", o.model, o.graph, s.nodes);
        let mut write = |file: PathBuf, text: String| match dino_runtime::files::write_atomic(&file, text.as_bytes()) {
            Ok(()) => s.files.push(file),
            Err(e) => failure = Some(e),
        };
        write(o.out.join(format!("{index:02}-{name}.dot")), collapsed_dot(cx, &g, &title));
        for group in o.expand {
            if let Some(text) = group_dot(cx, &g, group, &format!("{title}, group {group}")) {
                write(o.out.join(format!("{index:02}-{name}.{group}.dot")), text);
            }
        }
        stages.push(s);
    };
    match o.graph {
        GraphKind::TrainStep => {
            let built =
                dino_models::with_dino(o.model, Build { batch: o.batch, passes: &o.passes, observe: &mut observe });
            built.ok_or_else(|| Error::UnknownName {
                kind: "DINO preset",
                name: o.model.to_string(),
                hint: format!(" among the DINO presets ({})", dino_models::dino_names().join(", ")),
            })??;
        }
        GraphKind::Forward => {
            let built =
                dino_models::with_vit(o.model, Build { batch: o.batch, passes: &o.passes, observe: &mut observe });
            built.ok_or_else(|| Error::UnknownName {
                kind: "preset",
                name: o.model.to_string(),
                hint: format!(" among the presets ({})", dino_models::vit_names().join(", ")),
            })??;
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    for g in o.expand {
        if !stages.iter().any(|s| s.files.iter().any(|f| f.to_string_lossy().ends_with(&format!(".{g}.dot")))) {
            return Err(Error::UnknownName {
                kind: "group",
                name: g.clone(),
                hint: " among the groups of the graph (see the collapsed drawings)".into(),
            });
        }
    }
    if o.render {
        for s in &mut stages {
            let dots: Vec<PathBuf> = s.files.clone();
            for d in dots {
                let drawn = render(&d).map_err(|why| Error::Format { path: d.clone(), why })?;
                s.files.extend(drawn);
            }
        }
    }
    Ok(stages)
}

type Observer<'a> = &'a mut dyn FnMut(Option<&PassReport>, &Graph);

/// The graph to build, and where its stages go (a visitor of either kind of preset).
struct Build<'a, 'b> {
    batch: usize,
    passes: &'a Passes,
    observe: Observer<'b>,
}

impl dino_models::DinoVisitor for Build<'_, '_> {
    type Output = Result<()>;
    fn visit<M: dino_runtime::model::DinoModel>(self, _: &'static str) -> Result<()> {
        let mut step = dino_runtime::dino::DinoStep::<M>::build(self.batch)?;
        step.compile(self.passes.observed(self.observe));
        Ok(())
    }
}

impl dino_models::VitVisitor for Build<'_, '_> {
    type Output = Result<()>;
    fn visit<V: dino_runtime::model::VitModel>(self, _: &'static str) -> Result<()> {
        crate::eval::vit_runner::VitRunner::<V>::build_compiled(
            crate::eval::vit_runner::Output::Tokens,
            None,
            self.batch,
            self.passes.observed(self.observe),
        )
        .map(drop)
    }
}

impl StageSummary {
    /// The summary as text lines.
    pub fn text(&self) -> String {
        let mb = |b: f64| format!("{:.1} MB", b / 1e6);
        let mut s = format!(
            "{:<12} {:>6} nodes {:>7.3} s  {:>8.2} GFLOP  moved {:>10}  arena {:>10}  {} groups\n",
            self.stage,
            self.nodes,
            self.seconds,
            self.flops / 1e9,
            self.bytes_moved.map(mb).unwrap_or_else(|| "-".into()),
            self.arena_bytes.map(|b| mb(b as f64)).unwrap_or_else(|| "-".into()),
            self.groups
        );
        let kinds: Vec<String> = self.by_kind.iter().take(8).map(|(k, n)| format!("{n} {k}")).collect();
        s += &format!("    kinds: {}\n", kinds.join(", "));
        if let Some((n, lo, med, hi)) = self.fused {
            s += &format!("    fused kernels: {n}, primitives each {lo}..{hi} (median {med})\n");
        }
        if !self.contractions.is_empty() {
            let c: Vec<String> = self.contractions.iter().take(6).map(|(k, n)| format!("{n}x {k}")).collect();
            s += &format!(
                "    contractions: {}{}\n",
                c.join(", "),
                if self.contractions.len() > 6 { ", ..." } else { "" }
            );
        }
        s
    }
}
