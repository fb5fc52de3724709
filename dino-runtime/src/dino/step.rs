//! One DINO training step as one graph: teacher on the global crops, student on every crop
//! with the same parameters, the DINO loss, backward, clipping (per parameter or per module)
//! and AdamW with the last-layer freeze group and DINOv2's lr multipliers when declared, the
//! teacher EMA and the center EMA.
//!
//! The host sets the crops, the stochastic-depth masks and the per-step scalars
//! ([`DinoStep::set_batch`], [`DinoStep::set_drop_masks`], [`DinoStep::set_hyper`]), runs the
//! compiled graph once, reads [`StepOutputs`] and moves the new state into place
//! ([`DinoStep::advance`]).
use crate::graph::dims;
use luminal::prelude::*;
use rand::Rng;

use super::entropy::{target_entropies, teacher_entropies};
use super::{center_update, dino_loss, dino_loss_of, ema_update, sinkhorn_knopp};
use crate::backend::executor::Executor;
use crate::config::Centering;
use crate::config::DinoConfig;
use crate::error::{Error, Result};
use crate::graph::{data, Handles};
use crate::model::DinoModel;
use crate::nn::{drop_path, BranchMasks, ParamSet, Parameters};
use crate::optim::{Clip, OptimizerSpec};
use crate::step::TrainStep;

/// Does a parameter belong to the last layer (DINO's freeze group)?
pub fn is_last_layer(name: &str) -> bool {
    name.contains("last_layer")
}

/// The graph of one training step and the handles the host loop needs: a [`TrainStep`] (graph,
/// trained student parameters, optimizer, loss, reports, carried state) with DINO's teacher,
/// center, crops and schedules on top.
///
/// Serialized as its handles (a compiled artifact's, see [`TrainStep`]); a deserialized step
/// has the declaration's config, which the caller replaces with the run's.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub struct DinoStep<M: DinoModel> {
    pub train: TrainStep,
    /// Every student parameter (for checkpoints; the trained ones, a frozen `weight_g`
    /// excluded, are `train.trained`).
    pub student_params: ParamSet,
    pub teacher_params: ParamSet,
    /// Teacher parameters updated by the EMA (aligned with `trained`) and their new values.
    pub teacher_trained: Vec<NodeIndex>,
    pub new_teacher: Vec<NodeIndex>,
    /// Inputs: `(2 * batch, C, G, G)` global crops (view 1 then view 2), `(local * batch, C, L,
    /// L)` local crops (view by view), the center `(K,)`, the teacher temperature and the
    /// teacher momentum (1 element each).
    pub global_crops: NodeIndex,
    pub local_crops: Option<NodeIndex>,
    pub center: NodeIndex,
    pub teacher_temp: NodeIndex,
    pub momentum: NodeIndex,
    pub new_center: NodeIndex,
    /// Mean entropy of the teacher's (centered, sharpened) distributions, and the entropy of
    /// their batch mean (1 element each; collapse shows as either going to 0).
    pub teacher_entropy: NodeIndex,
    pub teacher_mean_entropy: NodeIndex,
    /// Stochastic-depth mask inputs of the student (blocks with a non-zero rate only).
    pub drop_inputs: Vec<DropInput>,
    /// Node counts after building each part.
    pub stages: Vec<(String, usize)>,
    /// iBOT's inputs, when the objective declares it.
    #[serde(default)]
    pub ibot: Option<super::ibot_step::IbotInputs>,
    /// Images per step on this rank.
    pub batch: usize,
    /// Ranks of the data-parallel run the step was built for (1: a single process).
    #[serde(default = "one")]
    pub replicas: usize,
    /// The objective the step was built for (the declaration, with run-time overrides).
    #[serde(skip, default = "declared::<M>")]
    pub config: DinoConfig,
    #[serde(skip)]
    model: std::marker::PhantomData<M>,
}

fn one() -> usize {
    1
}

fn declared<M: DinoModel>() -> DinoConfig {
    M::CONFIG
}

/// One stochastic-depth mask input: `rows` samples, drop probability `rate`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DropInput {
    pub id: NodeIndex,
    pub name: String,
    pub rows: usize,
    pub rate: f64,
}

/// The per-step hyperparameters (from the schedules).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepHyper {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub teacher_temp: f64,
    /// Skip the last layer's update (DINO's `freeze_last_layer` epochs).
    pub freeze_last_layer: bool,
}

/// What one step reports (on every rank of a data-parallel run, after
/// [`StepOutputs::mean_over`]: the same numbers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutputs {
    /// The DINO loss (cross-entropy of the student views against the teacher's).
    pub loss: f32,
    /// What the step minimizes: the DINO loss plus the weighted regularizers.
    pub objective: f32,
    /// DINOv2's KoLeo term (unweighted, summed over the global views), when declared.
    pub koleo: Option<f32>,
    /// iBOT's masked-patch loss (unweighted), when declared.
    pub ibot: Option<f32>,
    /// Global norm of the student's gradients before clipping.
    pub grad_norm: f32,
    pub teacher_entropy: f32,
    pub teacher_mean_entropy: f32,
}

impl StepOutputs {
    /// The outputs of the whole global batch: the per-rank means (loss, objective, KoLeo,
    /// teacher entropy) averaged over the ranks, in rank order; the gradient norm and the
    /// entropy of the batch mean are computed from all-reduced values already.
    pub fn mean_over(self, group: &dyn crate::dist::Collective) -> Result<StepOutputs> {
        if group.world() == 1 {
            return Ok(self);
        }
        let mut v =
            [self.loss, self.objective, self.koleo.unwrap_or(0.0), self.teacher_entropy, self.ibot.unwrap_or(0.0)];
        crate::dist::all_reduce_mean(group, "the step's reported loss and entropy", &mut v)?;
        Ok(StepOutputs {
            loss: v[0],
            objective: v[1],
            koleo: self.koleo.map(|_| v[2]),
            teacher_entropy: v[3],
            ibot: self.ibot.map(|_| v[4]),
            ..self
        })
    }
}

impl<M: DinoModel> DinoStep<M> {
    /// Build the step of the declared objective for `batch` images per step (global views
    /// `2 * batch` rows, local views `locals * batch` rows).
    pub fn build(batch: usize) -> Result<Self> {
        Self::build_with(M::CONFIG, batch)
    }

    /// Build the step with run-time overrides of the declaration (temperatures, momenta,
    /// optimizer, clipping, drop path, number of local crops...). Crop sizes are part of the
    /// model's type and cannot change.
    pub fn build_with(cfg: DinoConfig, batch: usize) -> Result<Self> {
        Self::build_replicated(cfg, batch, crate::dist::Replicas::ONE)
    }

    /// [`Self::build_with`] for one of `replicas` ranks of a data-parallel run, `batch` images
    /// per rank: the gradients are averaged over the ranks ([`TrainStep::build_replicated`]),
    /// the center follows the teacher's mean over the global batch, and the entropy of the
    /// batch-mean teacher distribution is that of the global batch. KoLeo, as DINOv2 computes
    /// it, finds nearest neighbours within each rank's batch.
    pub fn build_replicated(cfg: DinoConfig, batch: usize, replicas: crate::dist::Replicas) -> Result<Self> {
        if replicas.ranks == 0 {
            return Err(Error::Config { what: "ranks".into(), why: "a run has at least one".into() });
        }
        if batch == 0 {
            return Err(Error::Config { what: "batch size".into(), why: "must be at least 1".into() });
        }
        cfg.validate(&M::CONFIG)?;
        if cfg.koleo > 0.0 && batch < 2 {
            return Err(Error::Config {
                what: "batch size".into(),
                why: format!("KoLeo (weight {}) finds each image's nearest other image: needs at least 2", cfg.koleo),
            });
        }
        if let Some(i) = &cfg.ibot {
            super::ibot_step::check(i, &cfg, batch, replicas.ranks)?;
        }
        let locals = cfg.local.map(|l| l.count).unwrap_or(0);
        let mut cx = Box::new(Graph::new());
        cx.set_dyn_dim(dims::BATCH, batch);
        cx.set_dyn_dim(dims::GLOBAL_ROWS, 2 * batch);
        cx.set_dyn_dim(dims::LOCAL_ROWS, locals * batch);
        cx.set_dyn_dim(dims::LOCAL_VIEWS, locals);
        let student = M::new(&mut cx);
        let teacher = M::new(&mut cx);
        let globals = cx.named_tensor::<(dims::GlobalRows, M::Channels, M::Global, M::Global)>("global_crops");
        let center = cx.named_tensor::<(M::Out,)>("center");
        let teacher_temp = cx.named_tensor::<R0>("teacher_temp");
        let momentum = cx.named_tensor::<R0>("teacher_momentum");

        // stochastic depth on the student only: one (rows,) mask input per dropped branch
        let rates = drop_path::rates(cfg.backbone.drop_path, cfg.backbone.depth);
        let mut drop_inputs = vec![];
        let g_masks: Vec<BranchMasks<dims::GlobalRows>> = masks(&mut cx, &rates, "global", 2 * batch, &mut drop_inputs);

        // teacher: global crops only; student: every crop, shared parameters
        // with iBOT the student sees masked global crops and both give their patch tokens
        let (t_cls, s_cls, ibot) = match cfg.ibot {
            Some(_) => {
                let m = super::ibot_step::mask_input::<M>(&mut cx);
                let (t_cls, t_patches) = teacher.backbone_global_tokens(globals, None, &[]);
                let (s_cls, s_patches) = student.backbone_global_tokens(globals, Some(m), &g_masks);
                let parts = super::ibot_step::build(
                    &student,
                    &teacher,
                    s_patches,
                    t_patches,
                    m,
                    teacher_temp,
                    &cfg,
                    batch,
                    replicas,
                );
                (t_cls, s_cls, Some(parts))
            }
            None => (teacher.backbone_global(globals), student.backbone_global_drop(globals, &g_masks), None),
        };
        let t_out = teacher.head(t_cls);
        let s_global = student.head(s_cls);
        let (local_crops, s_local) = if locals > 0 {
            let x = cx.named_tensor::<(dims::LocalRows, M::Channels, M::Local, M::Local)>("local_crops");
            let l_masks: Vec<BranchMasks<dims::LocalRows>> =
                masks(&mut cx, &rates, "local", locals * batch, &mut drop_inputs);
            (Some(x.id), Some(student.head(student.backbone_local_drop(x, &l_masks))))
        } else {
            (None, None)
        };
        let mut stages = vec![("forward".to_string(), cx.graph.node_count())];
        // the teacher's targets: centered and sharpened (DINO), or DINOv2's Sinkhorn-Knopp
        let assigned = match cfg.centering {
            Centering::Ema => None,
            Centering::SinkhornKnopp { iterations } => {
                Some(sinkhorn_knopp(t_out, teacher_temp, iterations, 2 * batch, replicas))
            }
        };
        let st = cfg.student_temp as f32;
        let dino = match assigned {
            Some(q) => dino_loss_of(q, s_global, s_local, st, batch, locals),
            None => dino_loss(s_global, s_local, t_out, center, teacher_temp, st, batch, locals),
        };
        // DINOv2's KoLeo on the student's global [CLS] features, weighted into the objective
        let koleo = (cfg.koleo > 0.0).then(|| {
            let eye = super::koleo::identity_dyn(&mut cx, batch);
            super::koleo::koleo_per_view(s_cls, eye, batch)
        });
        let mut loss = match koleo {
            Some(k) => dino + k * cfg.koleo as f32,
            None => dino,
        };
        if let (Some(p), Some(i)) = (&ibot, cfg.ibot) {
            loss = loss + p.loss * i.weight as f32;
        }
        let new_center = center_update(center, t_out, cfg.center_momentum as f32, 2 * batch, replicas);
        let (teacher_entropy, teacher_mean_entropy) = match assigned {
            Some(q) => target_entropies(q, 2 * batch, replicas),
            None => teacher_entropies(t_out, center, teacher_temp, 2 * batch, replicas),
        };

        let student_params = ParamSet::of(&[("", &student as &dyn Parameters)][..], &mut cx);
        let teacher_params = ParamSet::of(&[("teacher", &teacher as &dyn Parameters)][..], &mut cx);
        let fixed_g = |n: &str| cfg.head.norm_last_layer && n.ends_with("last_layer.weight_g");
        let mut trained = student_params.clone();
        trained.params.retain(|p| !fixed_g(&p.name));
        let kind = cfg.optimizer.kind.build(cfg.optimizer.momentum);
        let clip = (cfg.clip_grad > 0.0).then_some(Clip { max_norm: cfg.clip_grad as f32, scope: cfg.clip_scope });
        let spec = OptimizerSpec {
            kind,
            clip,
            groups: &["default", "last_layer"],
            group_of: &|n| is_last_layer(n) as usize,
            lr_mult: &|n| cfg.lr_multiplier(n) as f32,
            freeze: cfg.freeze_rule,
        };
        let mut train = TrainStep::build_replicated(cx, loss.id, trained, spec, replicas)?;
        let cx = &mut train.cx;
        stages.push(("+backward+optimizer".to_string(), cx.graph.node_count()));
        // the teacher follows the trained parameters; its fixed weight_g stays 1 like the student's
        let teacher_trained: Vec<(NodeIndex, Vec<usize>)> = teacher_params
            .params
            .iter()
            .filter(|p| !fixed_g(p.name.trim_start_matches("teacher.")))
            .map(|p| (p.id, p.shape.clone()))
            .collect();
        let new_teacher = ema_update(cx, &teacher_trained, &train.optimizer.new_params, momentum.id);
        let teacher_trained: Vec<NodeIndex> = teacher_trained.into_iter().map(|t| t.0).collect();
        stages.push(("+ema".to_string(), train.cx.graph.node_count()));
        train
            .input("global_crops", globals.id)
            .input("center", center.id)
            .input("teacher_temp", teacher_temp.id)
            .input("teacher_momentum", momentum.id)
            .report("teacher_entropy", teacher_entropy.id)
            .report("teacher_mean_entropy", teacher_mean_entropy.id)
            .carry(&new_teacher, &teacher_trained)
            .carry(&[new_center.id], &[center.id]);
        if let Some(l) = local_crops {
            train.input("local_crops", l);
        }
        if let Some(k) = koleo {
            train.report("koleo", k.id);
        }
        if let Some(p) = &ibot {
            train
                .report("ibot", p.loss.id)
                .input("ibot_masks", p.inputs.masks)
                .input("ibot_select", p.inputs.select)
                .input("ibot_valid", p.inputs.valid)
                .input("ibot_weights", p.inputs.weights)
                .input("ibot_center", p.inputs.center)
                .carry(&[p.new_center.id], &[p.inputs.center]);
        }
        if koleo.is_some() || ibot.is_some() {
            // the DINO term apart from the objective (without other terms it is the objective)
            train.report("dino_loss", dino.id);
        }
        for d in &drop_inputs {
            train.input(&d.name, d.id);
        }
        for id in [teacher_temp.id, momentum.id] {
            train.cx.no_delete.insert(id);
        }
        Ok(DinoStep {
            train,
            student_params,
            teacher_params,
            teacher_trained,
            new_teacher,
            global_crops: globals.id,
            local_crops,
            center: center.id,
            teacher_temp: teacher_temp.id,
            momentum: momentum.id,
            new_center: new_center.id,
            teacher_entropy: teacher_entropy.id,
            teacher_mean_entropy: teacher_mean_entropy.id,
            drop_inputs,
            ibot: ibot.map(|p| p.inputs),
            stages,
            batch,
            replicas: replicas.ranks,
            config: cfg,
            model: std::marker::PhantomData,
        })
    }

    /// Initialize: student from `seed`, teacher equal to the student, zero center and
    /// optimizer state.
    pub fn init(&mut self, seed: u64) {
        self.student_params.init(&mut self.train.cx, seed);
        for (s, t) in self.student_params.params.iter().zip(&self.teacher_params.params) {
            let v = data::get(&self.train.cx, s.id).expect("initialized").to_vec();
            data::set(&mut self.train.cx, t.id, v);
            self.train.cx.no_delete.insert(t.id);
        }
        data::set(&mut self.train.cx, self.center, vec![0.0; self.config.head.out]);
        if let Some(i) = &self.ibot {
            data::set(&mut self.train.cx, i.center, vec![0.0; self.config.head.out]);
        }
        self.train.optimizer.init_state(&mut self.train.cx);
    }

    /// Compile for a backend with the given pass pipeline, keeping every handle valid.
    pub fn compile<C: Compiler>(&mut self, pipeline: C) {
        let mut extra = Handles(vec![self.new_center, self.teacher_entropy, self.teacher_mean_entropy]);
        extra.0.extend(&self.new_teacher);
        self.train.compile(pipeline, &mut extra);
        (self.new_center, self.teacher_entropy, self.teacher_mean_entropy) = (extra.0[0], extra.0[1], extra.0[2]);
        self.new_teacher = extra.0[3..].to_vec();
    }

    /// Element counts of the global and local crop inputs.
    pub fn crop_sizes(&self) -> (usize, usize) {
        let c = self.config.backbone.channels;
        let g = self.config.global.size;
        let local = self.config.local.map(|l| l.count * self.batch * c * l.size * l.size).unwrap_or(0);
        (2 * self.batch * c * g * g, local)
    }

    /// Set the crops of this step (view-major, see the field docs).
    pub fn set_batch(&mut self, global: Vec<f32>, local: Vec<f32>) -> Result<()> {
        let (ng, nl) = self.crop_sizes();
        let shape = |n: usize, s: usize, c: usize| format!("({n} x {c} x {s} x {s})");
        let c = self.config.backbone.channels;
        if global.len() != ng {
            return Err(Error::WrongSize {
                name: "global_crops".into(),
                shape: shape(2 * self.batch, self.config.global.size, c),
                expected: ng,
                got: global.len(),
            });
        }
        data::set(&mut self.train.cx, self.global_crops, global);
        if let Some(id) = self.local_crops {
            if local.len() != nl {
                let l = self.config.local.expect("local crops");
                return Err(Error::WrongSize {
                    name: "local_crops".into(),
                    shape: shape(l.count * self.batch, l.size, c),
                    expected: nl,
                    got: local.len(),
                });
            }
            data::set(&mut self.train.cx, id, local);
        }
        Ok(())
    }

    /// Draw this step's stochastic-depth masks.
    pub fn set_drop_masks(&mut self, rng: &mut impl Rng) {
        self.set_drop_masks_of_rank(rng, 0);
    }

    /// Draw the stochastic-depth masks of the whole global batch and keep rank `rank`'s rows:
    /// each rank of a data-parallel run draws from the same stream and gets the masks its
    /// images would have in a 1-rank step of the global batch (views stay view-major).
    pub fn set_drop_masks_of_rank(&mut self, rng: &mut impl Rng, rank: usize) {
        let (b, n) = (self.batch, self.replicas);
        for d in &self.drop_inputs {
            let views = d.rows / b;
            let all = drop_path::sample(rng, views * b * n, d.rate);
            let mine: Vec<f32> =
                (0..views).flat_map(|v| &all[(v * n + rank) * b..(v * n + rank + 1) * b]).copied().collect();
            data::set(&mut self.train.cx, d.id, mine);
        }
    }

    /// Set this step's hyperparameters.
    pub fn set_hyper(&mut self, h: &StepHyper) {
        if let Some(g) = self.train.optimizer.group_mut("last_layer") {
            g.frozen = h.freeze_last_layer;
        }
        self.train.optimizer.pre_step(&mut self.train.cx, h.lr as f32, h.weight_decay as f32);
        data::set(&mut self.train.cx, self.teacher_temp, vec![h.teacher_temp as f32]);
        data::set(&mut self.train.cx, self.momentum, vec![h.momentum as f32]);
    }

    /// The nodes [`Self::outputs`] reads (a device runtime brings these back to the host).
    pub fn report_ids(&self) -> Vec<NodeIndex> {
        self.train.report_ids()
    }

    /// Run the step once on `ex` and bring what it reports to the host (the rest of the state
    /// may stay on the device).
    pub fn run_on(&mut self, ex: &mut dyn Executor) -> Result<()> {
        self.train.run_on(ex)
    }

    /// Read (and take) the reported values after an execution.
    pub fn outputs(&mut self) -> Result<StepOutputs> {
        let mut first = |name: &str| -> Result<f32> {
            self.train.take(name)?.first().copied().ok_or_else(|| Error::MissingInput { name: name.into() })
        };
        let objective = first("loss")?;
        let koleo = if self.config.koleo > 0.0 { Some(first("koleo")?) } else { None };
        let ibot = if self.ibot.is_some() { Some(first("ibot")?) } else { None };
        let loss = if koleo.is_some() || ibot.is_some() { first("dino_loss")? } else { objective };
        let teacher_entropy = first("teacher_entropy")?;
        let teacher_mean_entropy = first("teacher_mean_entropy")?;
        let grad_norm = self.train.take_grad_norm();
        Ok(StepOutputs { loss, objective, koleo, ibot, grad_norm, teacher_entropy, teacher_mean_entropy })
    }

    /// After executing: move the new student, optimizer state, teacher and center into their
    /// slots (no copies).
    pub fn advance(&mut self) {
        self.train.advance();
    }
}

/// Mask inputs for the blocks with a non-zero drop rate.
fn masks<B: Dimension>(
    cx: &mut Graph,
    rates: &[f64],
    which: &str,
    rows: usize,
    out: &mut Vec<DropInput>,
) -> Vec<BranchMasks<B>> {
    rates
        .iter()
        .enumerate()
        .map(|(i, &rate)| {
            if rate <= 0.0 {
                return [None, None];
            }
            let mut branch = |j: usize| {
                let name = format!("drop_path.{which}.{i}.{}", ["attn", "mlp"][j]);
                let t = cx.named_tensor::<(B,)>(&name);
                out.push(DropInput { id: t.id, name, rows, rate });
                Some(t)
            };
            [branch(0), branch(1)]
        })
        .collect()
}
