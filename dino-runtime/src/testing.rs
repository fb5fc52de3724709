//! Test support shared by the runtime's and the workspace's tests: seeded data, finite
//! differences and compiled-vs-reference parity. Not part of the stable API.
use luminal::prelude::*;
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::autograd::backward;
use crate::backend::passes::Passes;
use crate::graph::{data, Handles};

/// A seeded, portable random source for test data.
pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }
    /// `n` values uniform in `[-scale, scale)`.
    pub fn uniform(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.0.gen_range(-scale..scale)).collect()
    }
    /// `n` values uniform in `[lo, hi)`.
    pub fn range(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.0.gen_range(lo..hi)).collect()
    }
}

/// A differentiable test problem built on a fresh graph.
pub struct Problem {
    /// The 1-element loss.
    pub loss: NodeIndex,
    /// Differentiable leaves and their values.
    pub vars: Vec<(NodeIndex, Vec<f32>)>,
    /// Other inputs and their values.
    pub inputs: Vec<(NodeIndex, Vec<f32>)>,
}

/// A problem with its backward graph, ready to evaluate.
pub struct Differentiated {
    pub cx: Box<Graph>,
    /// `[loss, grad_0, grad_1, ...]`, kept up to date through compilation.
    pub handles: Handles,
    pub problem: Problem,
}

impl Differentiated {
    /// Build the problem on a fresh graph and append its backward graph.
    pub fn new(build: &dyn Fn(&mut Graph) -> Problem) -> Differentiated {
        let mut cx = Box::new(Graph::new());
        let problem = build(&mut cx);
        let wrt: Vec<NodeIndex> = problem.vars.iter().map(|v| v.0).collect();
        let grads = backward(&mut cx, problem.loss, &wrt).expect("backward");
        let mut handles = Handles(vec![problem.loss]);
        handles.0.extend(grads.iter().map(|g| g.id));
        for id in &handles.0 {
            cx.no_delete.insert(*id);
        }
        Differentiated { cx, handles, problem }
    }

    /// Loss and gradients at `vals` (one value vector per var), with luminal's executor.
    pub fn eval(&mut self, vals: &[Vec<f32>]) -> (f32, Vec<Vec<f32>>) {
        self.eval_with(vals, &mut |cx| cx.execute())
    }

    /// Loss and gradients at `vals`, running the graph with `run`.
    pub fn eval_with(&mut self, vals: &[Vec<f32>], run: &mut dyn FnMut(&mut Graph)) -> (f32, Vec<Vec<f32>>) {
        for ((id, _), v) in self.problem.vars.iter().zip(vals) {
            data::set(&mut self.cx, *id, v.clone());
        }
        for (id, v) in &self.problem.inputs {
            data::set(&mut self.cx, *id, v.clone());
        }
        run(&mut self.cx);
        let mut out: Vec<Vec<f32>> =
            self.handles.0.iter().map(|id| data::take(&mut self.cx, *id).expect("output computed")).collect();
        let grads = out.split_off(1);
        (out[0][0], grads)
    }

    /// The current values of the vars.
    pub fn values(&self) -> Vec<Vec<f32>> {
        self.problem.vars.iter().map(|v| v.1.clone()).collect()
    }
}

/// Result of a finite-difference check.
#[derive(Debug)]
pub struct GradCheck {
    /// Worst `|numeric - analytic| / (atol + rtol * |analytic|)` over the checked elements.
    pub worst_ratio: f32,
    /// Where it happened: (var index, element, numeric, analytic).
    pub worst_at: (usize, usize, f32, f32),
}

/// Central finite differences on up to `per_var` elements of each var, compared with the
/// analytic gradient: passes when every checked element has
/// `|numeric - analytic| <= atol + rtol * |analytic|`.
pub fn finite_differences(d: &mut Differentiated, eps: f32, per_var: usize, atol: f32, rtol: f32) -> GradCheck {
    let vals = d.values();
    let (_, grads) = d.eval(&vals);
    let mut worst = GradCheck { worst_ratio: 0.0, worst_at: (0, 0, 0.0, 0.0) };
    for (vi, v) in vals.iter().enumerate() {
        let step = (v.len() / per_var).max(1);
        for j in (0..v.len()).step_by(step) {
            let mut plus = vals.clone();
            plus[vi][j] += eps;
            let mut minus = vals.clone();
            minus[vi][j] -= eps;
            let (lp, _) = d.eval(&plus);
            let (lm, _) = d.eval(&minus);
            let num = (lp - lm) / (2.0 * eps);
            let ana = grads[vi][j];
            let ratio = (num - ana).abs() / (atol + rtol * ana.abs());
            if ratio > worst.worst_ratio || ratio.is_nan() {
                worst = GradCheck { worst_ratio: ratio, worst_at: (vi, j, num, ana) };
            }
        }
    }
    worst
}

/// The largest absolute difference between two equally long slices, and where.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut worst = (0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        if d > worst.0 || d.is_nan() {
            worst = (d, i);
        }
    }
    worst
}

/// Largest difference between a compiled run and the reference (luminal's interpreter on the
/// uncompiled graph), over the loss and every gradient, relative to `1 + max |reference|`
/// of each output; also the output index where it happened.
#[derive(Debug)]
pub struct Parity {
    pub worst: f32,
    pub output: usize,
    pub element: usize,
    /// Kernel count of the compiled graph.
    pub kernels: usize,
}

/// The reference executor every backend is compared with: the CPU runtime.
pub fn reference_executor(cx: &Graph) -> Box<dyn crate::backend::executor::Executor> {
    Box::new(crate::backend::cpu::CpuRuntime::new(cx))
}

/// Build the problem twice: run one graph uncompiled with luminal's executor, compile the
/// other with the standard [`Passes`] and run it with the CPU runtime, and compare every
/// output.
pub fn cpu_parity(build: &dyn Fn(&mut Graph) -> Problem) -> Parity {
    passes_parity(build, &Passes::standard())
}

/// The pass correctness harness: build the problem twice, run one graph uncompiled with
/// luminal's executor and the other compiled by `passes` with the CPU runtime, and compare
/// the loss and every gradient. A pass of one's own is checked the same way.
pub fn passes_parity(build: &dyn Fn(&mut Graph) -> Problem, passes: &Passes) -> Parity {
    let mut reference = Differentiated::new(build);
    let vals = reference.values();
    let (l0, g0) = reference.eval(&vals);
    let mut compiled = Differentiated::new(build);
    passes.compile(&mut compiled.cx, &mut compiled.handles);
    let mut rt = reference_executor(&compiled.cx);
    let (l1, g1) = compiled.eval_with(&vals, &mut |cx| rt.execute(cx).expect("cpu run"));
    let mut worst = Parity { worst: 0.0, output: 0, element: 0, kernels: rt.stats().kernels };
    let outs0 = std::iter::once(vec![l0]).chain(g0);
    let outs1 = std::iter::once(vec![l1]).chain(g1);
    for (o, (a, b)) in outs0.zip(outs1).enumerate() {
        let scale = 1.0 + a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let (d, i) = max_abs_diff(&a, &b);
        if d / scale > worst.worst || d.is_nan() {
            worst = Parity { worst: d / scale, output: o, element: i, kernels: worst.kernels };
        }
    }
    worst
}

/// A problem for a layer: `loss = sum(y * r)` for a random `r`, differentiated with respect
/// to the given inputs and every parameter (random values uniform in `[-scale, scale)`).
pub fn layer_problem<S: Shape>(
    cx: &mut Graph,
    params: &crate::nn::ParamSet,
    inputs: Vec<(NodeIndex, Vec<f32>)>,
    y: GraphTensor<S>,
    scale: f32,
    rng: &mut Rng,
) -> Problem {
    let r = cx.named_tensor::<S>("r");
    let n = y.shape.n_elements().to_usize().expect("static test shape");
    let prod = y * r;
    let loss = crate::graph::ops::sum_all(cx, crate::graph::View { id: prod.id, st: prod.shape });
    let mut vars = inputs;
    for p in &params.params {
        vars.push((p.id, rng.uniform(p.numel(), scale)));
    }
    Problem { loss: loss.id, vars, inputs: vec![(r.id, rng.uniform(n, 1.0))] }
}

/// Finite differences plus compiled parity for a problem; panics with the worst element.
pub fn check_gradients(name: &str, build: &dyn Fn(&mut Graph) -> Problem, atol: f32, rtol: f32) {
    let mut d = Differentiated::new(build);
    let r = finite_differences(&mut d, 1e-2, 16, atol, rtol);
    let (v, j, num, ana) = r.worst_at;
    assert!(
        r.worst_ratio <= 1.0,
        "{name}: gradient mismatch at var {v} element {j}: numeric {num}, analytic {ana} (|diff| {:.3e}, tolerance {atol} + {rtol}*|analytic|)",
        (num - ana).abs()
    );
    let p = cpu_parity(build);
    assert!(
        p.worst <= 1e-5,
        "{name}: compiled differs from the reference by {:.3e} (relative) at output {} element {}",
        p.worst,
        p.output,
        p.element
    );
}
