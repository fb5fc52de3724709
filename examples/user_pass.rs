//! A compiler pass of one's own: write it, check it, and see it in the ablation table.
//!
//! The pass, `fold-scales`, folds two multiplications by constants into one:
//!
//! ```text
//!   x ──(view)── Mul ── Mul ──▶        x ──(view)── Mul ──▶
//!       c1 ──────┘       │                  c1*c2 ──┘
//!       c2 ──────────────┘
//! ```
//!
//! luminal writes `x / t` with a constant `t`, `exp(x)` (as `exp2(x / ln 2)`), means and
//! scalings as multiplications by constants, and chains of them appear where one feeds the
//! next. The example
//!
//! 1. checks the pass with the harness every pass is held to (`passes_parity`: a small
//!    problem, outputs and gradients equal to the uncompiled graph's);
//! 2. counts what it folds in the `fmnist-small` DINO training step;
//! 3. runs the pass ablation on that step with the pass inserted after the GEMM pass, beside
//!    the standard pipeline and the one with no passes (the reference), and prints the table.
//!
//! Run: `cargo run --release --example user_pass` (about a minute on 2 cores).
//!
//! Expected output: `fold-scales keeps outputs: max relative difference ...` (at most 1e-5),
//! `fold-scales folded N multiplications in the DINO step` with N > 0, then the ablation
//! table with the rows `all passes`, `no passes` and `all + fold-scales`, every `max error`
//! at most 2e-3, and `ok` last.
use dino::bench::passes::{ablate, AblationOptions, Row, SLOW_STEP_S};
use dino::device::Device;
use dino::runtime::backend::{Pass, Passes};
use dino::runtime::testing::{layer_problem, passes_parity, Problem, Rng};
use luminal::op::{Constant, ConstantValue, Mul};
use luminal::prelude::petgraph::{algo::toposort, Direction};
use luminal::prelude::*;
use std::cell::Cell;
use std::rc::Rc;

/// Two multiplications by constants become one. Counts what it folded (shared, so that the
/// count can be read while the pipeline owns the pass).
#[derive(Default)]
struct FoldScales {
    folded: Rc<Cell<usize>>,
}

/// The value of a float constant node.
fn float_constant(cx: &Graph, n: NodeIndex) -> Option<f32> {
    match cx.graph.node_weight(n)?.as_any().downcast_ref::<Constant>()? {
        Constant(ConstantValue::Float(f), _) => Some(*f),
        _ => None,
    }
}

/// A view that reads every element of its buffer in order (nothing permuted, sliced or padded).
fn plain(st: &ShapeTracker) -> bool {
    st.is_contiguous() && !st.is_sliced() && !st.is_padded()
}

/// `n` as `src * constant`: the other source (node, output, view), the constant and its view.
fn by_constant(cx: &Graph, n: NodeIndex) -> Option<((NodeIndex, u8, ShapeTracker), f32, ShapeTracker)> {
    if !cx.graph.node_weight(n)?.as_any().is::<Mul>() {
        return None;
    }
    let srcs = cx.get_sources(n);
    for i in 0..2 {
        let (c, _, st_c) = srcs[i];
        if let Some(v) = float_constant(cx, c) {
            // a constant read through padding would be zero there: not a plain scale
            if !st_c.is_sliced() && !st_c.is_padded() {
                return Some((srcs[1 - i], v, st_c));
            }
        }
    }
    None
}

impl Pass for FoldScales {
    fn name(&self) -> &str {
        "fold-scales"
    }

    fn summary(&self) -> &str {
        "x * c1 * c2 with constants c1, c2: one multiply by c1*c2"
    }

    fn run(&self, cx: &mut Graph, remap: dino::runtime::backend::passes::Remap<'_, '_>) {
        let order = toposort(&cx.graph, None).expect("luminal graphs are acyclic");
        for outer in order {
            if !cx.graph.contains_node(outer) {
                continue;
            }
            let Some(((inner, 0, st_inner), c2, _)) = by_constant(cx, outer) else { continue };
            // the inner product must be read by this node alone, whole and in order
            let consumers = cx.graph.edges_directed(inner, Direction::Outgoing).count();
            if consumers != 1 || !plain(&st_inner) || cx.no_delete.contains(&inner) || cx.to_retrieve.contains(&inner) {
                continue;
            }
            let Some(((x, out, st_x), c1, st_c1)) = by_constant(cx, inner) else { continue };
            let c = cx.add_op(Constant(ConstantValue::Float(c1 * c2), &cx.dyn_map)).finish();
            let folded = cx.add_op(Mul).input(x, out, st_x).input(c, 0, st_c1).finish();
            move_outgoing_edge(outer, folded, &mut cx.graph);
            move_references(&mut *remap, &mut cx.no_delete, &mut cx.to_retrieve, outer, folded);
            cx.graph.remove_node(outer);
            cx.graph.remove_node(inner);
            self.folded.set(self.folded.get() + 1);
        }
        // constants nothing reads any more
        let orphans: Vec<NodeIndex> = cx
            .graph
            .node_indices()
            .filter(|&n| float_constant(cx, n).is_some())
            .filter(|&n| cx.graph.edges_directed(n, Direction::Outgoing).count() == 0 && !cx.no_delete.contains(&n))
            .collect();
        for n in orphans {
            cx.graph.remove_node(n);
        }
    }
}

/// `y = (x * 0.5) * 3.0 + x * w`, differentiated: a chain to fold beside a product.
fn problem(cx: &mut Graph) -> Problem {
    let mut rng = Rng::new(1);
    let x = cx.named_tensor::<R2<4, 6>>("x");
    let w = cx.named_tensor::<R2<4, 6>>("w");
    let y = (x * 0.5) * 3.0 + x * w;
    let vars = vec![(x.id, rng.uniform(24, 1.0)), (w.id, rng.uniform(24, 1.0))];
    layer_problem(cx, &dino::runtime::nn::ParamSet { params: vec![] }, vars, y, 1.0, &mut rng)
}

fn main() -> dino::runtime::Result<()> {
    // 1. the harness: alone and inside the standard pipeline
    let alone = passes_parity(&problem, &Passes::none().with(FoldScales::default())?);
    let inside = passes_parity(&problem, &Passes::standard().insert_after("gemm", FoldScales::default())?);
    let worst = alone.worst.max(inside.worst);
    println!("fold-scales keeps outputs: max relative difference {worst:.2e}");
    assert!(worst <= 1e-5, "fold-scales changed the outputs: {alone:?} {inside:?}");

    // 2. what it finds in a real step
    let pass = FoldScales::default();
    let folded = pass.folded.clone();
    let mut step = dino::runtime::dino::DinoStep::<dino_models::FmnistSmall>::build(2)?;
    let before = step.train.cx.graph.node_count();
    step.compile(&Passes::none().with(pass)?);
    let after = step.train.cx.graph.node_count();
    println!("fold-scales folded {} multiplications in the DINO step ({before} -> {after} nodes)", folded.get());
    assert!(folded.get() > 0, "nothing to fold in the DINO step");

    // 3. the ablation table with the user's pipeline as a row
    let rows = vec![
        Row::ours("all passes", Passes::standard()),
        Row::ours("no passes", Passes::none()),
        Row::ours("all + fold-scales", Passes::standard().insert_after("gemm", FoldScales::default())?),
    ];
    let opts = AblationOptions {
        batch: 2,
        runs: 2,
        warmup: 1,
        rounds: 2,
        device: Device::Cpu,
        stock_timeout_s: 1,
        slow_step_s: SLOW_STEP_S,
    };
    let table = ablate("fmnist-small", rows, opts, &mut |what| eprintln!("[user_pass] {what}"))?;
    print!("{}", table.table());
    for r in &table.rows {
        let e = r.max_error.unwrap_or(f64::INFINITY);
        assert!(e <= 2e-3, "{}: max error {e:.2e}", r.name);
    }
    println!("ok");
    Ok(())
}
