//! The optimizer built into a training graph (see the module documentation of `optim`).
use luminal::prelude::*;

use crate::error::{Error, Result};
use crate::graph::{data, View};
use crate::nn::ParamSet;

use super::{adamw, clip, sgd, AdamWConfig, ClipScope, SgdConfig};

/// Which optimizer, with its fixed hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerKind {
    AdamW(AdamWConfig),
    Sgd(SgdConfig),
}

/// What a frozen group does (DINO's last-layer freeze, or DINOv2's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreezeRule {
    /// No update at all, as for a parameter whose `.grad` is `None` (DINO's
    /// `cancel_gradients_last_layer`): weights, moments and step count stay as they are.
    #[default]
    Skip,
    /// An optimizer step at lr 0 (DINOv2's `last_layer_lr` schedule): the weights stay, the
    /// moments and the step count move on.
    ZeroLr,
}

/// Gradient clipping: the largest norm and what the norm is taken over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clip {
    pub max_norm: f32,
    pub scope: ClipScope,
}

/// How the trained parameters are updated.
pub struct OptimizerSpec<'a> {
    pub kind: OptimizerKind,
    /// Gradient-norm clipping, or none.
    pub clip: Option<Clip>,
    /// Parameter groups (index 0 is the default) and each parameter's group by name.
    pub groups: &'a [&'a str],
    pub group_of: &'a dyn Fn(&str) -> usize,
    /// Each parameter's constant lr multiplier by name (1 for most; must be finite and > 0).
    pub lr_mult: &'a dyn Fn(&str) -> f32,
    pub freeze: FreezeRule,
}

impl OptimizerSpec<'_> {
    /// One group, no clipping, no multipliers.
    pub fn plain(kind: OptimizerKind) -> OptimizerSpec<'static> {
        OptimizerSpec {
            kind,
            clip: None,
            groups: &["default"],
            group_of: &|_| 0,
            lr_mult: &|_| 1.0,
            freeze: FreezeRule::Skip,
        }
    }
}

/// A set of parameters sharing an lr scale, a step count and a frozen flag.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub name: String,
    pub lr_scale: f32,
    pub frozen: bool,
    /// Updates applied so far (PyTorch keeps a step count per parameter; parameters of a group
    /// always step together).
    pub steps: u64,
    /// One 1-element input per hyperparameter of the optimizer (see `adamw.rs`, `sgd.rs`).
    scalars: Vec<NodeIndex>,
    /// The scalar inputs of the group's parameters with an lr multiplier other than 1.
    #[serde(default)]
    scaled: Vec<(f32, Vec<NodeIndex>)>,
}

impl Group {
    /// The scalar inputs of this group's parameters with lr multiplier `mult` (made on first
    /// use).
    fn scalars_for(&mut self, cx: &mut Graph, kind: &OptimizerKind, mult: f32) -> Vec<NodeIndex> {
        if mult == 1.0 {
            return self.scalars.clone();
        }
        if let Some((_, s)) = self.scaled.iter().find(|(m, _)| *m == mult) {
            return s.clone();
        }
        let s = kind.scalar_inputs(cx, &format!("{}.lr{}", self.name, self.scaled.len() + 1));
        self.scaled.push((mult, s.clone()));
        s
    }
}

/// An optimizer built into a graph. See the module documentation. Serialized as its handles
/// (a compiled artifact's).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub groups: Vec<Group>,
    /// Group of each parameter.
    pub group_of: Vec<usize>,
    pub params: Vec<NodeIndex>,
    pub new_params: Vec<NodeIndex>,
    /// Optimizer state tensors per parameter (AdamW: m, v; SGD: momentum buffer).
    pub state: Vec<Vec<NodeIndex>>,
    pub new_state: Vec<Vec<NodeIndex>>,
    /// Total gradient norm before clipping (1 element), for logging.
    pub grad_norm: NodeIndex,
    numels: Vec<usize>,
    names: Vec<String>,
    lr: f32,
    weight_decay: f32,
    #[serde(default)]
    freeze: FreezeRule,
}

/// Does DINO's rule decay this parameter? (`get_params_groups`: not a bias, more than 1-D.)
pub fn decays(name: &str, shape: &[usize]) -> bool {
    shape.len() > 1 && !name.ends_with(".bias")
}

impl Optimizer {
    /// Build the update of every parameter of `params` from its gradient in `grads`
    /// (`autograd::backward` order) as `spec` says.
    pub fn build(cx: &mut Graph, params: &ParamSet, grads: &[View], spec: &OptimizerSpec) -> Result<Optimizer> {
        let (kind, group_names) = (spec.kind, spec.groups);
        if grads.len() != params.params.len() {
            return Err(Error::Config {
                what: "optimizer".into(),
                why: format!("{} gradients for {} parameters", grads.len(), params.params.len()),
            });
        }
        if let Some(c) = spec.clip {
            if !(c.max_norm > 0.0 && c.max_norm.is_finite()) {
                return Err(Error::Config {
                    what: "clip".into(),
                    why: format!("{} must be finite and > 0 (omit it to disable clipping)", c.max_norm),
                });
            }
        }
        let groups: Vec<Group> = group_names
            .iter()
            .map(|n| Group {
                name: n.to_string(),
                lr_scale: 1.0,
                frozen: false,
                steps: 0,
                scalars: kind.scalar_inputs(cx, n),
                scaled: vec![],
            })
            .collect();
        let mut opt = Optimizer {
            kind,
            groups,
            group_of: vec![],
            params: params.ids(),
            new_params: vec![],
            state: vec![],
            new_state: vec![],
            grad_norm: NodeIndex::end(),
            numels: params.params.iter().map(|p| p.numel()).collect(),
            names: params.params.iter().map(|p| p.name.clone()).collect(),
            lr: 0.0,
            weight_decay: 0.0,
            freeze: spec.freeze,
        };
        let squares: Vec<View> = grads.iter().map(|g| clip::squared_norm(cx, *g)).collect();
        let names: Vec<&str> = params.params.iter().map(|p| p.name.as_str()).collect();
        let clipped = match spec.clip {
            Some(c) => clip::clip(cx, grads, &squares, &names, c.max_norm, c.scope),
            None => grads.to_vec(),
        };
        for (p, g) in params.params.iter().zip(clipped) {
            let gi = (spec.group_of)(&p.name);
            if gi >= opt.groups.len() {
                return Err(Error::Config {
                    what: "optimizer groups".into(),
                    why: format!("`{}` put in group {gi} of {}", p.name, opt.groups.len()),
                });
            }
            let mult = (spec.lr_mult)(&p.name);
            if !(mult > 0.0 && mult.is_finite()) {
                return Err(Error::Config {
                    what: format!("lr multiplier of `{}`", p.name),
                    why: format!("{mult} must be finite and > 0"),
                });
            }
            let dims = g.dims();
            let w = View::contiguous(p.id, &dims);
            let scalars = opt.groups[gi].scalars_for(cx, &kind, mult);
            let decay = decays(&p.name, &p.shape);
            let (new_w, state, new_state) = match kind {
                OptimizerKind::AdamW(c) => adamw::update(cx, &p.name, w, g, &scalars, decay, c),
                OptimizerKind::Sgd(_) => sgd::update(cx, &p.name, w, g, &scalars, decay),
            };
            opt.group_of.push(gi);
            opt.new_params.push(new_w);
            opt.state.push(state);
            opt.new_state.push(new_state);
        }
        opt.grad_norm = clip::total_norm(cx, &squares).id;
        for id in opt.outputs() {
            cx.no_delete.insert(id);
        }
        Ok(opt)
    }

    /// Nodes whose values the step produces and keeps.
    fn outputs(&self) -> Vec<NodeIndex> {
        let mut v = self.new_params.clone();
        v.extend(self.new_state.iter().flatten());
        v.push(self.grad_norm);
        v
    }

    /// Zero the optimizer state (call once, after the parameters are initialized).
    pub fn init_state(&self, cx: &mut Graph) {
        for (st, n) in self.state.iter().zip(&self.numels) {
            for id in st {
                data::set(cx, *id, vec![0.0; *n]);
                cx.no_delete.insert(*id);
            }
        }
    }

    /// The group with this name.
    pub fn group_mut(&mut self, name: &str) -> Option<&mut Group> {
        self.groups.iter_mut().find(|g| g.name == name)
    }

    /// Set this step's learning rate and weight decay (from the schedules) and write every
    /// per-group scalar input. Call before executing the step.
    pub fn pre_step(&mut self, cx: &mut Graph, lr: f32, weight_decay: f32) {
        self.lr = lr;
        self.weight_decay = weight_decay;
        for g in &mut self.groups {
            // a group stepped at lr 0 is not frozen for the optimizer (DINOv2)
            let (skip, lr) = match (g.frozen, self.freeze) {
                (true, FreezeRule::Skip) => (true, 0.0),
                (true, FreezeRule::ZeroLr) => (false, 0.0),
                (false, _) => (false, lr as f64 * g.lr_scale as f64),
            };
            if !skip {
                g.steps += 1;
            }
            let classes = std::iter::once((1.0, &g.scalars)).chain(g.scaled.iter().map(|(m, s)| (*m, s)));
            for (mult, scalars) in classes {
                let values = self.kind.scalar_values((lr * mult as f64) as f32, weight_decay, g.steps, skip);
                for (id, v) in scalars.iter().zip(values) {
                    data::set(cx, *id, vec![v]);
                }
            }
        }
    }

    /// Move the new parameters and state into the old slots (after executing the step).
    pub fn post_step(&self, cx: &mut Graph) {
        transfer_data_same_graph(self.new_params.clone(), self.params.clone(), cx);
        for (new, old) in self.new_state.iter().zip(&self.state) {
            transfer_data_same_graph(new.clone(), old.clone(), cx);
        }
    }

    /// The total gradient norm of the last step (before clipping), taken out of the graph.
    pub fn take_grad_norm(&self, cx: &mut Graph) -> Option<f32> {
        data::take(cx, self.grad_norm).and_then(|v| v.first().copied())
    }

    /// Named optimizer state tensors (`<param>.exp_avg` ... as PyTorch names them) for
    /// checkpoints.
    pub fn state_names(&self) -> Vec<(String, NodeIndex, usize)> {
        let suffixes = self.kind.state_names();
        let mut out = vec![];
        for ((st, name), n) in self.state.iter().zip(&self.names).zip(&self.numels) {
            for (id, s) in st.iter().zip(suffixes) {
                out.push((format!("{name}.{s}"), *id, *n));
            }
        }
        out
    }
}

impl ToIdsMut for Optimizer {
    fn to_ids_mut(&mut self) -> Vec<&mut NodeIndex> {
        let mut v: Vec<&mut NodeIndex> = self.new_params.iter_mut().collect();
        v.extend(self.new_state.iter_mut().flatten());
        v.push(&mut self.grad_norm);
        v
    }
}

impl OptimizerKind {
    fn scalar_inputs(&self, cx: &mut Graph, group: &str) -> Vec<NodeIndex> {
        let names: &[&str] = match self {
            OptimizerKind::AdamW(_) => adamw::SCALARS,
            OptimizerKind::Sgd(_) => sgd::SCALARS,
        };
        names.iter().map(|n| cx.named_tensor::<R0>(&format!("optim.{group}.{n}")).id).collect()
    }

    fn scalar_values(&self, lr: f32, wd: f32, step: u64, frozen: bool) -> Vec<f32> {
        match self {
            OptimizerKind::AdamW(c) => adamw::scalar_values(c, lr, wd, step, frozen),
            OptimizerKind::Sgd(c) => sgd::scalar_values(c, lr, wd, frozen),
        }
    }

    fn state_names(&self) -> &'static [&'static str] {
        match self {
            OptimizerKind::AdamW(_) => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Sgd(_) => &["momentum_buffer"],
        }
    }
}
