//! One compiled trainable step: a loss over a graph, its gradients, an optimizer built into
//! the same graph, the state carried from one step to the next, named inputs and reported
//! outputs, run on an executor.
//!
//! ```text
//!  build(cx, loss, trained, OptimizerSpec)      backward + optimizer in the graph
//!    .input("crops", id) .report("entropy", id) .carry(new_teacher, teacher)
//!    .compile(Passes) .attach(device.executor(&cx))
//!  loop: set("crops", x) ─► pre_step(lr, wd) ─► run() ─► loss() / take("entropy") ─► advance()
//! ```
//!
//! The DINO step ([`crate::dino::DinoStep`]), the supervised baseline and the linear probe are
//! its instances; each adds only what is its own (crops and schedules, labels, features).
//! [`TrainStep::advance`] moves the new weights, optimizer state and carried state (an EMA
//! teacher, a center) into their slots without copying.
use luminal::prelude::*;

use crate::autograd::backward;
use crate::backend::executor::Executor;
use crate::error::{Error, Result};
use crate::graph::{data, Handles};
use crate::nn::ParamSet;
use crate::optim::Optimizer;
pub use crate::optim::OptimizerSpec;

/// A compiled trainable step. See the module documentation. Serialized as its handles (a
/// compiled artifact's): the graph and the executor are not part of it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct TrainStep {
    #[serde(skip)]
    pub cx: Box<Graph>,
    /// The trained parameters, in optimizer order.
    pub trained: ParamSet,
    pub optimizer: Optimizer,
    /// The scalar loss.
    pub loss: NodeIndex,
    inputs: Vec<(String, NodeIndex)>,
    reports: Vec<(String, NodeIndex)>,
    /// (new value, slot): moved after every step.
    carry: Vec<(NodeIndex, NodeIndex)>,
    #[serde(skip)]
    executor: Option<Box<dyn Executor>>,
}

impl TrainStep {
    /// Differentiate `loss` (one element) with respect to `trained` and build the optimizer's
    /// update of each parameter into `cx`.
    pub fn build(cx: Box<Graph>, loss: NodeIndex, trained: ParamSet, spec: OptimizerSpec) -> Result<TrainStep> {
        TrainStep::build_replicated(cx, loss, trained, spec, crate::dist::Replicas::ONE)
    }

    /// [`Self::build`] for one of `replicas` ranks of a data-parallel run (DDP): each rank's
    /// gradients are summed over the ranks and divided by their number before clipping and the
    /// optimizer, so every replica applies the same update (the loss is a mean over this rank's
    /// share of the global batch). Nothing is added unless `replicas.reduce`.
    pub fn build_replicated(
        mut cx: Box<Graph>,
        loss: NodeIndex,
        trained: ParamSet,
        spec: OptimizerSpec,
        replicas: crate::dist::Replicas,
    ) -> Result<TrainStep> {
        let mut grads = backward(&mut cx, loss, &trained.ids())?;
        if replicas.reduce {
            // the mean over the ranks (the division applied as the sum is unpacked)
            for (g, p) in grads.iter_mut().zip(&trained.params) {
                *g = crate::dist::all_reduce(&mut cx, *g, &p.name, 1.0 / replicas.ranks as f32);
            }
        }
        let optimizer = Optimizer::build(&mut cx, &trained, &grads, &spec)?;
        cx.no_delete.insert(loss);
        Ok(TrainStep { cx, trained, optimizer, loss, inputs: vec![], reports: vec![], carry: vec![], executor: None })
    }

    /// Name an input the host sets before each step ([`Self::set`]).
    pub fn input(&mut self, name: &str, id: NodeIndex) -> &mut Self {
        self.inputs.push((name.to_string(), id));
        self
    }

    /// Report `id` after each step: kept, brought to the host, read with [`Self::take`].
    pub fn report(&mut self, name: &str, id: NodeIndex) -> &mut Self {
        self.cx.no_delete.insert(id);
        self.reports.push((name.to_string(), id));
        self
    }

    /// After each step, move each of `new` into the matching slot of `slots` (state carried
    /// to the next step: an EMA, a running center). Slots keep their values across runs.
    pub fn carry(&mut self, new: &[NodeIndex], slots: &[NodeIndex]) -> &mut Self {
        assert_eq!(new.len(), slots.len(), "one slot per carried value");
        for (&n, &s) in new.iter().zip(slots) {
            self.cx.no_delete.insert(n);
            self.cx.no_delete.insert(s);
            self.carry.push((n, s));
        }
        self
    }

    /// Compile with `pipeline`, keeping every handle (loss, reports, carried values, the
    /// optimizer's and the caller's `extra`) valid.
    pub fn compile<C: Compiler>(&mut self, pipeline: C, extra: &mut Handles) {
        let mut own = Handles(
            std::iter::once(self.loss)
                .chain(self.reports.iter().map(|r| r.1))
                .chain(self.carry.iter().map(|c| c.0))
                .collect(),
        );
        self.cx.compile(pipeline, (&mut own, extra, &mut self.optimizer));
        let mut ids = own.0.into_iter();
        self.loss = ids.next().expect("the loss");
        for r in &mut self.reports {
            r.1 = ids.next().expect("a report");
        }
        for c in &mut self.carry {
            c.0 = ids.next().expect("a carried value");
        }
    }

    /// Run on `ex` from now on ([`Self::run`]).
    pub fn attach(&mut self, ex: Box<dyn Executor>) {
        self.executor = Some(ex);
    }

    /// The attached executor.
    pub fn executor(&mut self) -> Result<&mut dyn Executor> {
        match self.executor.as_mut() {
            Some(e) => Ok(e.as_mut()),
            None => Err(Error::Backend("the step has no executor: attach one after compiling".into())),
        }
    }

    /// Set the named input `name`.
    pub fn set(&mut self, name: &str, v: Vec<f32>) -> Result<()> {
        let id = self.inputs.iter().find(|i| i.0 == name).map(|i| i.1).ok_or_else(|| Error::UnknownName {
            kind: "input",
            name: name.to_string(),
            hint: format!(
                " among the step's inputs ({})",
                self.inputs.iter().map(|i| i.0.as_str()).collect::<Vec<_>>().join(", ")
            ),
        })?;
        data::set(&mut self.cx, id, v);
        Ok(())
    }

    /// Set the optimizer's per-step learning rate and weight decay.
    pub fn pre_step(&mut self, lr: f32, weight_decay: f32) {
        self.optimizer.pre_step(&mut self.cx, lr, weight_decay);
    }

    /// What one run brings back to the host: the loss, the reports, the gradient norm.
    pub fn report_ids(&self) -> Vec<NodeIndex> {
        std::iter::once(self.loss).chain(self.reports.iter().map(|r| r.1)).chain([self.optimizer.grad_norm]).collect()
    }

    /// Run once on the attached executor.
    pub fn run(&mut self) -> Result<()> {
        let ids = self.report_ids();
        let ex = self.executor.as_mut().ok_or_else(|| Error::Backend("the step has no executor".into()))?;
        ex.run(&mut self.cx, &ids)
    }

    /// Run once on `ex` (an executor held elsewhere).
    pub fn run_on(&mut self, ex: &mut dyn Executor) -> Result<()> {
        let ids = self.report_ids();
        ex.run(&mut self.cx, &ids)
    }

    /// Take the reported value `name` (`loss` is always reported) after a run.
    pub fn take(&mut self, name: &str) -> Result<Vec<f32>> {
        let id = if name == "loss" {
            self.loss
        } else {
            self.reports.iter().find(|r| r.0 == name).map(|r| r.1).ok_or_else(|| Error::UnknownName {
                kind: "report",
                name: name.to_string(),
                hint: " among the step's reports".into(),
            })?
        };
        data::take(&mut self.cx, id)
            .ok_or_else(|| Error::MissingInput { name: format!("step output `{name}` (was the step executed?)") })
    }

    /// Take the loss after run `iteration`; a non-finite loss is [`Error::NonFiniteLoss`].
    pub fn take_loss(&mut self, iteration: usize) -> Result<f32> {
        let loss = self.take("loss")?.first().copied().unwrap_or(f32::NAN);
        if loss.is_finite() {
            Ok(loss)
        } else {
            Err(Error::NonFiniteLoss { value: loss, iteration, epoch: None, context: String::new() })
        }
    }

    /// Take the gradient norm (before clipping) of the last run.
    pub fn take_grad_norm(&mut self) -> f32 {
        self.optimizer.take_grad_norm(&mut self.cx).unwrap_or(f32::NAN)
    }

    /// After a run: the new weights, optimizer state and carried values into their slots.
    pub fn advance(&mut self) {
        self.optimizer.post_step(&mut self.cx);
        let (new, slots): (Vec<NodeIndex>, Vec<NodeIndex>) = self.carry.iter().copied().unzip();
        transfer_data_same_graph(new, slots, &mut self.cx);
    }

    /// Everything the step keeps on the device back to the host (checkpoints, evaluation).
    pub fn sync(&mut self) -> Result<()> {
        match self.executor.as_mut() {
            Some(ex) => ex.all_to_host(&mut self.cx),
            None => Ok(()),
        }
    }

    /// The host values of the trained parameters, by name (after [`Self::sync`]).
    pub fn weights(&self) -> Result<Vec<(String, Vec<f32>)>> {
        self.trained
            .params
            .iter()
            .map(|p| Ok((p.name.clone(), data::get_or_err(&self.cx, p.id, &p.name)?.to_vec())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Init, ParamInfo};
    use crate::optim::SgdConfig;

    /// `loss = sum(w * x)` with SGD (no momentum) on `w`, a step counter carried as
    /// `count <- count + 1`, and `w * x` reported.
    fn problem() -> TrainStep {
        let mut cx = Box::new(Graph::new());
        let x = cx.named_tensor::<luminal::shape::R1<3>>("x");
        let w = cx.named_tensor::<luminal::shape::R1<3>>("w");
        let count = cx.named_tensor::<luminal::shape::R0>("count");
        let wx = w * x;
        let loss = wx.sum_reduce::<luminal::shape::R0, luminal::shape::Axis<0>>();
        let next = count + 1.0;
        let trained =
            ParamSet { params: vec![ParamInfo { name: "w".into(), id: w.id, shape: vec![3], init: Init::Zeros }] };
        data::set(&mut cx, w.id, vec![1.0, 2.0, 3.0]);
        data::set(&mut cx, count.id, vec![0.0]);
        let sgd = OptimizerSpec::plain(crate::optim::OptimizerKind::Sgd(SgdConfig { momentum: 0.0 }));
        let mut s = TrainStep::build(cx, loss.id, trained, sgd).expect("build");
        s.input("x", x.id).report("wx", wx.id).carry(&[next.id], &[count.id]);
        s.optimizer.init_state(&mut s.cx);
        s.compile(crate::backend::Passes::default(), &mut Handles(vec![]));
        let ex = crate::testing::reference_executor(&s.cx);
        s.attach(ex);
        s
    }

    #[test]
    fn a_step_reports_updates_and_carries_its_state() {
        let mut s = problem();
        for it in 0..2 {
            s.set("x", vec![1.0, -1.0, 0.5]).unwrap();
            s.pre_step(0.1, 0.0);
            s.run().unwrap();
            let loss = s.take_loss(it).unwrap();
            let w = [1.0 - 0.1 * it as f32, 2.0 + 0.1 * it as f32, 3.0 - 0.05 * it as f32];
            assert!((loss - (w[0] - w[1] + 0.5 * w[2])).abs() < 1e-5, "iteration {it}: loss {loss}");
            let wx = s.take("wx").unwrap();
            assert!((wx[1] + w[1]).abs() < 1e-5, "{wx:?}");
            assert!(s.take_grad_norm().is_finite());
            s.advance();
        }
        s.sync().unwrap();
        let w = &s.weights().unwrap()[0].1;
        for (got, want) in w.iter().zip([0.8, 2.2, 2.9]) {
            assert!((got - want).abs() < 1e-5, "w {w:?}");
        }
        let count = s.cx.tensors.get(&(s.carry[0].1, 0)).and_then(|t| t.data.as_any().downcast_ref::<Vec<f32>>());
        assert_eq!(count.map(|c| c[0]), Some(2.0), "the carried counter moved into its slot twice");
    }

    #[test]
    fn unknown_inputs_and_a_non_finite_loss_are_named_errors() {
        let mut s = problem();
        let e = s.set("crops", vec![0.0]).unwrap_err().to_string();
        assert!(e.contains("`crops`") && e.contains("x"), "{e}");
        assert!(s.take("nope").unwrap_err().to_string().contains("`nope`"));
        s.set("x", vec![f32::NAN, 0.0, 0.0]).unwrap();
        s.pre_step(0.1, 0.0);
        s.run().unwrap();
        match s.take_loss(7) {
            Err(Error::NonFiniteLoss { iteration: 7, value, .. }) => assert!(value.is_nan()),
            other => panic!("expected NonFiniteLoss, got {other:?}"),
        }
        let mut bare = problem();
        bare.executor = None;
        assert!(bare.run().unwrap_err().to_string().contains("no executor"));
    }
}
