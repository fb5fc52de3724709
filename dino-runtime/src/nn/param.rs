//! Parameters: the named, initialized, trainable tensors of a model.
//!
//! Every layer implements [`Parameters`], visiting its tensors under the names PyTorch's
//! `state_dict` uses (`blocks.0.attn.qkv.weight`), so checkpoints of the reference
//! implementation load without renaming. [`ParamSet`] collects them, names their graph nodes
//! after them (errors then name the tensor) and initializes them.
use luminal::op::Function;
use luminal::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result};
use crate::graph::data;

/// How a parameter starts (the initializers of timm's ViT and DINO's head).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Init {
    Zeros,
    Ones,
    /// Normal(0, std) truncated to [-2, 2] (timm `trunc_normal_`, absolute bounds).
    TruncNormal {
        std: f32,
    },
    /// Uniform in [-bound, bound].
    Uniform {
        bound: f32,
    },
    /// Every element `value` (LayerScale's `init_values`).
    Constant {
        value: f32,
    },
}

impl Init {
    /// `n` values from this initializer.
    pub fn sample(self, n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        match self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Constant { value } => vec![value; n],
            Init::TruncNormal { std } => {
                let d = Normal::new(0.0f64, std as f64).expect("std is finite and positive");
                (0..n)
                    .map(|_| loop {
                        let v = d.sample(rng);
                        if (-2.0..=2.0).contains(&v) {
                            break v as f32;
                        }
                    })
                    .collect()
            }
            Init::Uniform { bound } => {
                use rand::Rng;
                (0..n).map(|_| rng.gen_range(-bound..=bound)).collect()
            }
        }
    }
}

/// One parameter of a model.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ParamInfo {
    /// The PyTorch `state_dict` key.
    pub name: String,
    pub id: NodeIndex,
    /// The PyTorch shape (e.g. `[out, in]` for a linear weight).
    pub shape: Vec<usize>,
    pub init: Init,
}

impl ParamInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A model (or part of one) with parameters.
pub trait Parameters {
    /// Visit every parameter, in a fixed order, under its name relative to this module.
    fn visit(&self, v: &mut ParamVisitor);
}

/// Collects parameters with their full names.
#[derive(Debug, Default)]
pub struct ParamVisitor {
    path: Vec<String>,
    pub params: Vec<ParamInfo>,
}

impl ParamVisitor {
    /// A parameter tensor of this module.
    pub fn tensor<S: Shape>(&mut self, name: &str, t: GraphTensor<S>, init: Init) {
        let shape = S::realized_shape().iter().map(|d| d.to_usize().expect("parameters have static shapes")).collect();
        let mut full = self.path.clone();
        full.push(name.to_string());
        self.params.push(ParamInfo { name: full.join("."), id: t.id, shape, init });
    }

    /// A parameter whose graph tensor's type does not carry its shape (a count known at run
    /// time, such as the register tokens'): `shape` is its `state_dict` shape.
    pub fn tensor_with_shape(&mut self, name: &str, id: NodeIndex, shape: Vec<usize>, init: Init) {
        let mut full = self.path.clone();
        full.push(name.to_string());
        self.params.push(ParamInfo { name: full.join("."), id, shape, init });
    }

    /// A submodule's parameters under `name`.
    pub fn module<M: Parameters + ?Sized>(&mut self, name: &str, m: &M) {
        if !name.is_empty() {
            self.path.push(name.to_string());
        }
        m.visit(self);
        if !name.is_empty() {
            self.path.pop();
        }
    }
}

/// The parameters of a model, in visiting order.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ParamSet {
    pub params: Vec<ParamInfo>,
}

impl ParamSet {
    /// Collect a model's parameters and name their graph nodes after their keys.
    pub fn of<M: Parameters + ?Sized>(model: &M, cx: &mut Graph) -> ParamSet {
        let mut v = ParamVisitor::default();
        v.module("", model);
        for p in &v.params {
            if let Some(f) = cx.graph.node_weight_mut(p.id).and_then(|o| o.as_any_mut().downcast_mut::<Function>()) {
                f.0 = p.name.clone();
            }
        }
        ParamSet { params: v.params }
    }

    /// Node ids, in order.
    pub fn ids(&self) -> Vec<NodeIndex> {
        self.params.iter().map(|p| p.id).collect()
    }

    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.params.iter().map(ParamInfo::numel).sum()
    }

    /// The parameter with this key.
    pub fn get(&self, name: &str) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Fill every parameter from its initializer (seeded; one stream per parameter, so adding
    /// a parameter does not change the others) and keep it in the graph between runs.
    pub fn init(&self, cx: &mut Graph, seed: u64) {
        for (i, p) in self.params.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1)));
            data::set(cx, p.id, p.init.sample(p.numel(), &mut rng));
            cx.no_delete.insert(p.id);
        }
    }

    /// Set one parameter's values (checked against its shape) and keep it.
    pub fn set(&self, cx: &mut Graph, name: &str, values: Vec<f32>) -> Result<()> {
        let p = self.get(name).ok_or_else(|| Error::UnknownName {
            kind: "tensor",
            name: name.into(),
            hint: String::new(),
        })?;
        if values.len() != p.numel() {
            return Err(Error::WrongSize {
                name: name.into(),
                shape: format!("{:?}", p.shape),
                expected: p.numel(),
                got: values.len(),
            });
        }
        data::set(cx, p.id, values);
        cx.no_delete.insert(p.id);
        Ok(())
    }

    /// A parameter's current values.
    pub fn values<'a>(&self, cx: &'a Graph, name: &str) -> Result<&'a [f32]> {
        let p = self.get(name).ok_or_else(|| Error::UnknownName {
            kind: "tensor",
            name: name.into(),
            hint: String::new(),
        })?;
        data::get_or_err(cx, p.id, name)
    }
}

/// Several named modules as one model: `[("backbone", &vit), ("head", &head)]`.
impl Parameters for [(&str, &dyn Parameters)] {
    fn visit(&self, v: &mut ParamVisitor) {
        for (name, m) in self {
            v.module(name, *m);
        }
    }
}
