//! The pass pipeline: named compiler passes, each one switchable, users' own among them.
//!
//! ```text
//!   primitive graph (autograd + optimizer built in)
//!     │  Passes::standard()                      Passes::standard().without("fusion")?
//!     ├─► dead-code ─► cse ─► gemm ─► fusion ─► row-fusion ─► Planner ─► Executor
//!     │                          ▲
//!     │            .insert_after("gemm", MyPass)?   (a user's [`Pass`], run in its place)
//!     └─► reports(): per pass its name, node counts before and after, seconds
//! ```
//!
//! Every pass keeps the graph's outputs equal to the unoptimized graph's (up to float
//! reassociation): [`crate::testing::passes_parity`] runs a problem through any pipeline and
//! compares every output with the uncompiled graph, and `tests` below do it for each pass
//! switched off in turn. Any subset of the passes, in the standard order, gives a graph the
//! CPU executor runs (what no pass replaced runs as luminal's own operator); a device backend
//! may need more (the CUDA one runs only GEMMs and fused kernels).
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use luminal::prelude::*;

use super::cse::{CsePass, DeadCodePass};
use super::fusion::FusionPass;
use super::gemm::GemmPass;
use super::row_fusion::RowFusionPass;
use crate::error::{Error, Result};

/// The handles a pass must keep valid: luminal's `ToIdsMut` flattened to one list, so that
/// a pass can be a trait object.
pub type Remap<'a, 'b> = &'a mut Vec<&'b mut NodeIndex>;

/// A compiler pass over a luminal graph: a name, a line saying what it does, and the rewrite.
///
/// A pass must keep every output equal to what the graph computed before it (check it with
/// [`crate::testing::passes_parity`]) and keep every handle in `remap` pointing at the node
/// that now computes it (luminal's `move_references` does that when a node is replaced).
/// Register one with [`Passes::with`] or [`Passes::insert_after`]; `examples/user_pass.rs`
/// writes one and shows it in the ablation table of `dino bench passes`.
pub trait Pass {
    /// The name reports and the command line use (kebab-case, unique in a pipeline).
    fn name(&self) -> &str;
    /// One line: what the pass does.
    fn summary(&self) -> &str;
    /// Rewrite `cx`.
    fn run(&self, cx: &mut Graph, remap: Remap<'_, '_>);
}

/// The passes dino ships, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Builtin {
    /// [`DeadCodePass`]: drop nodes no kept output depends on.
    DeadCode,
    /// [`CsePass`]: one node per common subexpression.
    Cse,
    /// [`GemmPass`]: `Mul -> SumReduce` contractions become strided batched GEMMs.
    Gemm,
    /// [`FusionPass`]: chains of elementwise primitives and reductions become fused kernels.
    Fusion,
    /// [`RowFusionPass`]: row reductions move into the kernels that read them.
    RowFusion,
}

impl Builtin {
    /// Every built-in pass, in pipeline order.
    pub const ALL: [Builtin; 5] = [Builtin::DeadCode, Builtin::Cse, Builtin::Gemm, Builtin::Fusion, Builtin::RowFusion];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::DeadCode => "dead-code",
            Builtin::Cse => "cse",
            Builtin::Gemm => "gemm",
            Builtin::Fusion => "fusion",
            Builtin::RowFusion => "row-fusion",
        }
    }

    /// The pass called `name`, or an error listing the names.
    pub fn parse(name: &str) -> Result<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name).ok_or_else(|| Error::UnknownName {
            kind: "pass",
            name: name.to_string(),
            hint: format!(" among the passes ({})", Builtin::ALL.map(Builtin::name).join(", ")),
        })
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Pass for Builtin {
    fn name(&self) -> &str {
        Builtin::name(*self)
    }

    fn summary(&self) -> &str {
        match self {
            Builtin::DeadCode => "drop nodes no kept output depends on",
            Builtin::Cse => "one node per common subexpression",
            Builtin::Gemm => "Mul->SumReduce contractions to strided batched GEMMs",
            Builtin::Fusion => "elementwise chains and reductions to fused kernels",
            Builtin::RowFusion => "row reductions into the kernels that read them",
        }
    }

    fn run(&self, cx: &mut Graph, remap: Remap<'_, '_>) {
        match self {
            Builtin::DeadCode => DeadCodePass.compile(cx, remap),
            Builtin::Cse => CsePass.compile(cx, remap),
            Builtin::Gemm => GemmPass.compile(cx, remap),
            Builtin::Fusion => FusionPass.compile(cx, remap),
            Builtin::RowFusion => RowFusionPass.compile(cx, remap),
        }
    }
}

/// What one pass did in the last compilation.
#[derive(Debug, Clone, PartialEq)]
pub struct PassReport {
    pub name: String,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub seconds: f64,
}

/// An ordered list of passes, run as one luminal [`Compiler`]. `Passes::default()` is
/// [`Passes::standard`]. With `DINO_DEBUG` >= 1 each pass prints what it did.
pub struct Passes {
    passes: Vec<Box<dyn Pass>>,
    reports: Mutex<Vec<PassReport>>,
}

impl Default for Passes {
    fn default() -> Passes {
        Passes::standard()
    }
}

impl fmt::Debug for Passes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Passes {
    /// Every built-in pass, in order: what every trainer and evaluator runs.
    pub fn standard() -> Passes {
        Passes::only(&Builtin::ALL)
    }

    /// No pass at all: the graph as built (the reference every pass is compared with).
    pub fn none() -> Passes {
        Passes { passes: vec![], reports: Mutex::new(vec![]) }
    }

    /// These built-in passes, in pipeline order whatever the order given.
    pub fn only(list: &[Builtin]) -> Passes {
        let mut list = list.to_vec();
        list.sort();
        list.dedup();
        let mut p = Passes::none();
        p.passes = list.into_iter().map(|b| Box::new(b) as Box<dyn Pass>).collect();
        p
    }

    /// The names of the passes, in order.
    pub fn names(&self) -> Vec<&str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Each pass's name and summary, in order.
    pub fn describe(&self) -> Vec<(&str, &str)> {
        self.passes.iter().map(|p| (p.name(), p.summary())).collect()
    }

    fn position(&self, name: &str) -> Result<usize> {
        self.passes.iter().position(|p| p.name() == name).ok_or_else(|| Error::UnknownName {
            kind: "pass",
            name: name.to_string(),
            hint: format!(" among the pipeline's passes ({})", self.names().join(", ")),
        })
    }

    /// The same pipeline without the pass called `name`.
    pub fn without(mut self, name: &str) -> Result<Passes> {
        let i = self.position(name)?;
        self.passes.remove(i);
        Ok(self)
    }

    /// `pass` appended at the end.
    pub fn with(mut self, pass: impl Pass + 'static) -> Result<Passes> {
        self.check_new(pass.name())?;
        self.passes.push(Box::new(pass));
        Ok(self)
    }

    /// `pass` run right after the pass called `after`.
    pub fn insert_after(mut self, after: &str, pass: impl Pass + 'static) -> Result<Passes> {
        self.check_new(pass.name())?;
        let i = self.position(after)?;
        self.passes.insert(i + 1, Box::new(pass));
        Ok(self)
    }

    fn check_new(&self, name: &str) -> Result<()> {
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(Error::Config {
                what: "pass name".into(),
                why: format!("must be kebab-case ([a-z0-9-]+), got `{name}`"),
            });
        }
        if self.names().contains(&name) {
            return Err(Error::Config {
                what: "pass name".into(),
                why: format!("the pipeline already has a pass named `{name}`"),
            });
        }
        Ok(())
    }

    /// What each pass did in the last compilation with this pipeline.
    pub fn reports(&self) -> Vec<PassReport> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Compile `cx`, calling `observe` after each pass with its report and the graph as it
    /// left it (`dino inspect` draws each stage).
    pub fn compile_observed<T: ToIdsMut>(
        &self,
        cx: &mut Graph,
        mut remap: T,
        observe: &mut dyn FnMut(&PassReport, &Graph),
    ) {
        let mut ids = remap.to_ids_mut();
        let mut reports = Vec::with_capacity(self.passes.len());
        for p in &self.passes {
            let nodes_before = cx.graph.node_count();
            let t = Instant::now();
            p.run(cx, &mut ids);
            let r = PassReport {
                name: p.name().to_string(),
                nodes_before,
                nodes_after: cx.graph.node_count(),
                seconds: t.elapsed().as_secs_f64(),
            };
            if crate::debug::level() >= 1 {
                eprintln!(
                    "[dino] pass {}: {} -> {} nodes in {:.3} s",
                    r.name, r.nodes_before, r.nodes_after, r.seconds
                );
            }
            observe(&r, cx);
            reports.push(r);
        }
        if let Ok(mut slot) = self.reports.lock() {
            *slot = reports;
        }
    }
}

/// A pipeline that shows each stage to `observe`: the graph as built (`None`), then after each
/// pass with its report. Made by [`Passes::observed`].
pub struct Observed<'a> {
    passes: &'a Passes,
    observe: std::cell::RefCell<&'a mut dyn FnMut(Option<&PassReport>, &Graph)>,
}

impl Passes {
    /// This pipeline as a [`Compiler`] that calls `observe` on the graph as built and after
    /// each pass (`dino inspect` draws and summarizes each stage).
    pub fn observed<'a>(&'a self, observe: &'a mut dyn FnMut(Option<&PassReport>, &Graph)) -> Observed<'a> {
        Observed { passes: self, observe: std::cell::RefCell::new(observe) }
    }
}

impl Compiler for Observed<'_> {
    fn compile<T: ToIdsMut>(&self, cx: &mut Graph, remap: T) {
        let mut observe = self.observe.borrow_mut();
        observe(None, cx);
        self.passes.compile_observed(cx, remap, &mut |r, g| observe(Some(r), g));
    }
}

impl Compiler for Passes {
    fn compile<T: ToIdsMut>(&self, cx: &mut Graph, remap: T) {
        self.compile_observed(cx, remap, &mut |_, _| {});
    }
}

/// By reference, so that the caller reads [`Passes::reports`] afterwards.
impl Compiler for &Passes {
    fn compile<T: ToIdsMut>(&self, cx: &mut Graph, remap: T) {
        self.compile_observed(cx, remap, &mut |_, _| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{layer_problem, passes_parity, Problem, Rng};

    /// A small problem with a contraction, a softmax (row reductions) and elementwise
    /// chains: every built-in pass has something to do.
    fn problem(cx: &mut Graph) -> Problem {
        let mut rng = Rng::new(3);
        let x = cx.named_tensor::<R2<6, 8>>("x");
        let w = cx.named_tensor::<R2<8, 5>>("w");
        let h = x.matmul(w);
        let y = h.softmax::<1>() + h * 0.5;
        let params = crate::nn::ParamSet { params: vec![] };
        let vars = vec![(x.id, rng.uniform(48, 1.0)), (w.id, rng.uniform(40, 1.0))];
        layer_problem(cx, &params, vars, y, 1.0, &mut rng)
    }

    #[test]
    fn names_are_unique_and_parse_back() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::parse(b.name()).unwrap(), b);
        }
        let e = Builtin::parse("fuse").unwrap_err().to_string();
        assert!(e.contains("fuse") && e.contains("row-fusion"), "{e}");
        assert_eq!(Passes::standard().names(), ["dead-code", "cse", "gemm", "fusion", "row-fusion"]);
        assert_eq!(Passes::only(&[Builtin::Fusion, Builtin::Gemm]).names(), ["gemm", "fusion"]);
    }

    #[test]
    fn without_and_insert_name_what_is_wrong() {
        let e = Passes::standard().without("nope").unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("dead-code"), "{e}");
        assert_eq!(Passes::standard().without("cse").unwrap().names(), ["dead-code", "gemm", "fusion", "row-fusion"]);
        let e = Passes::standard().with(Builtin::Cse).unwrap_err().to_string();
        assert!(e.contains("already has a pass named `cse`"), "{e}");
        let p = Passes::none().with(Builtin::Gemm).unwrap().insert_after("gemm", Builtin::DeadCode).unwrap();
        assert_eq!(p.names(), ["gemm", "dead-code"]);
    }

    #[test]
    fn every_pass_switched_off_keeps_the_outputs() {
        let all = passes_parity(&problem, &Passes::standard());
        assert!(all.worst <= 1e-5, "all passes: {all:?}");
        for b in Builtin::ALL {
            let p = passes_parity(&problem, &Passes::standard().without(b.name()).unwrap());
            assert!(p.worst <= 1e-5, "without {b}: {p:?}");
            let alone = passes_parity(&problem, &Passes::only(&[b]));
            assert!(alone.worst <= 1e-5, "{b} alone: {alone:?}");
        }
        // the kernel count shows the passes did something
        assert!(all.kernels < passes_parity(&problem, &Passes::none()).kernels);
    }

    #[test]
    fn reports_follow_each_pass() {
        let mut cx = Graph::new();
        let p = problem(&mut cx);
        let passes = Passes::standard();
        let mut seen = vec![];
        let mut loss = p.loss;
        passes.compile_observed(&mut cx, &mut loss, &mut |r, g| seen.push((r.name.clone(), g.graph.node_count())));
        let reports = passes.reports();
        assert_eq!(reports.len(), 5);
        for (r, (name, n)) in reports.iter().zip(&seen) {
            assert_eq!(&r.name, name);
            assert_eq!(r.nodes_after, *n);
        }
        assert!(reports.last().unwrap().nodes_after < reports[0].nodes_before);
    }
}
