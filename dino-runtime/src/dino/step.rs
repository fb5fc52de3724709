//! One DINO training step as one graph: teacher on the global crops, student on every crop
//! with the same parameters, the DINO loss, backward, per-parameter clipping and AdamW with
//! the last-layer freeze group, the teacher EMA and the center EMA.
use luminal::prelude::*;

use super::{center_update, dino_loss, ema_update};
use crate::autograd::backward;
use crate::error::{Error, Result};
use crate::graph::{data, Handles};
use crate::model::DinoModel;
use crate::nn::{ParamSet, Parameters};
use crate::optim::{AdamWConfig, Optimizer, OptimizerKind, SgdConfig};

/// Does a parameter belong to the last layer (DINO's freeze group)?
pub fn is_last_layer(name: &str) -> bool {
    name.contains("last_layer")
}

/// The graph of one training step and the handles the host loop needs.
pub struct DinoStep<M: DinoModel> {
    pub cx: Box<Graph>,
    pub student: M,
    pub teacher: M,
    /// Every student parameter (for checkpoints).
    pub student_params: ParamSet,
    /// The trained student parameters (a frozen `weight_g` excluded), in optimizer order.
    pub trained: ParamSet,
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
    pub loss: NodeIndex,
    pub new_center: NodeIndex,
    pub optimizer: Optimizer,
    /// Node counts after building each part.
    pub stages: Vec<(String, usize)>,
    pub batch: usize,
}

impl<M: DinoModel> DinoStep<M> {
    /// Build the step for `batch` images per step (global views `2 * batch` rows, local views
    /// `locals * batch` rows).
    pub fn build(batch: usize) -> Result<Self> {
        let cfg = M::CONFIG;
        if batch == 0 {
            return Err(Error::Config { what: "batch size".into(), why: "must be at least 1".into() });
        }
        let locals = cfg.local.map(|l| l.count).unwrap_or(0);
        let mut cx = Box::new(Graph::new());
        cx.set_dyn_dim('b', batch);
        cx.set_dyn_dim('g', 2 * batch);
        cx.set_dyn_dim('l', locals * batch);
        cx.set_dyn_dim('v', locals);
        let student = M::new(&mut cx);
        let teacher = M::new(&mut cx);
        let globals = cx.named_tensor::<(Dyn<'g'>, M::Channels, M::Global, M::Global)>("global_crops");
        let center = cx.named_tensor::<(M::Out,)>("center");
        let teacher_temp = cx.named_tensor::<R0>("teacher_temp");
        let momentum = cx.named_tensor::<R0>("teacher_momentum");

        // teacher: global crops only; student: every crop, shared parameters
        let t_out = teacher.head(teacher.backbone_global(globals));
        let s_global = student.head(student.backbone_global(globals));
        let (local_crops, s_local) = if locals > 0 {
            let x = cx.named_tensor::<(Dyn<'l'>, M::Channels, M::Local, M::Local)>("local_crops");
            (Some(x.id), Some(student.head(student.backbone_local(x))))
        } else {
            (None, None)
        };
        let mut stages = vec![("forward".to_string(), cx.graph.node_count())];
        let loss = dino_loss(s_global, s_local, t_out, center, teacher_temp, cfg.student_temp as f32, batch, locals);
        let new_center = center_update(center, t_out, cfg.center_momentum as f32, 2 * batch);

        let student_params = ParamSet::of(&[("", &student as &dyn Parameters)][..], &mut cx);
        let teacher_params = ParamSet::of(&[("teacher", &teacher as &dyn Parameters)][..], &mut cx);
        let fixed_g = |n: &str| cfg.head.norm_last_layer && n.ends_with("last_layer.weight_g");
        let mut trained = student_params.clone();
        trained.params.retain(|p| !fixed_g(&p.name));
        let grads = backward(&mut cx, loss.id, &trained.ids())?;
        stages.push(("+backward".to_string(), cx.graph.node_count()));
        let kind = match cfg.optimizer.kind {
            "sgd" => OptimizerKind::Sgd(SgdConfig { momentum: cfg.optimizer.momentum as f32 }),
            _ => OptimizerKind::AdamW(AdamWConfig::default()),
        };
        let clip = (cfg.clip_grad > 0.0).then_some(cfg.clip_grad as f32);
        let optimizer = Optimizer::build(&mut cx, kind, &trained, &grads, clip, &["default", "last_layer"], |n| {
            is_last_layer(n) as usize
        })?;
        // the teacher follows the trained parameters; its fixed weight_g stays 1 like the student's
        let teacher_trained: Vec<NodeIndex> = teacher_params
            .params
            .iter()
            .filter(|p| !fixed_g(p.name.trim_start_matches("teacher.")))
            .map(|p| p.id)
            .collect();
        let shapes: Vec<(NodeIndex, Vec<usize>)> = teacher_params
            .params
            .iter()
            .filter(|p| !fixed_g(p.name.trim_start_matches("teacher.")))
            .map(|p| (p.id, p.shape.clone()))
            .collect();
        let new_teacher = ema_update(&mut cx, &shapes, &optimizer.new_params, momentum.id);
        stages.push(("+optimizer+ema".to_string(), cx.graph.node_count()));
        for id in new_teacher.iter().chain([&loss.id, &new_center.id]) {
            cx.no_delete.insert(*id);
        }
        for id in [center.id, teacher_temp.id, momentum.id] {
            cx.no_delete.insert(id);
        }
        Ok(DinoStep {
            cx,
            student,
            teacher,
            student_params,
            trained,
            teacher_params,
            teacher_trained,
            new_teacher,
            global_crops: globals.id,
            local_crops,
            center: center.id,
            teacher_temp: teacher_temp.id,
            momentum: momentum.id,
            loss: loss.id,
            new_center: new_center.id,
            optimizer,
            stages,
            batch,
        })
    }

    /// Initialize: student from `seed`, teacher equal to the student, zero center and
    /// optimizer state.
    pub fn init(&mut self, seed: u64) {
        self.student_params.init(&mut self.cx, seed);
        for (s, t) in self.student_params.params.iter().zip(&self.teacher_params.params) {
            let v = data::get(&self.cx, s.id).expect("initialized").to_vec();
            data::set(&mut self.cx, t.id, v);
            self.cx.no_delete.insert(t.id);
        }
        data::set(&mut self.cx, self.center, vec![0.0; M::CONFIG.head.out]);
        self.optimizer.init_state(&mut self.cx);
    }

    /// Compile for a backend with the given pass pipeline, keeping every handle valid.
    pub fn compile<C: Compiler>(&mut self, pipeline: C) {
        let mut outs = Handles(vec![self.loss, self.new_center]);
        let mut teacher = Handles(self.new_teacher.clone());
        self.cx.compile(pipeline, (&mut outs, &mut teacher, &mut self.optimizer));
        (self.loss, self.new_center) = (outs.0[0], outs.0[1]);
        self.new_teacher = teacher.0;
    }

    /// After executing: move the new student, optimizer state, teacher and center into their
    /// slots (no copies).
    pub fn advance(&mut self) {
        self.optimizer.post_step(&mut self.cx);
        transfer_data_same_graph(self.new_teacher.clone(), self.teacher_trained.clone(), &mut self.cx);
        transfer_data_same_graph(vec![self.new_center], vec![self.center], &mut self.cx);
    }
}
