//! The rules of `dino!` (augmentation switches: `augment`).
use super::augment::augment;
use super::*;

fn head(cx: &mut Ctxt, h: Option<&HeadInput>, name: &syn::Ident) -> HeadIr {
    let Some(h) = h else {
        return HeadIr { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: true };
    };
    cx.extend(h.errors.0.clone());
    let form = "head block";
    let hidden = required(cx, &h.hidden, name, form, "hidden", "2048")
        .map(|n| positive_int(cx, "hidden", n, 2048))
        .unwrap_or(2048);
    let bottleneck = required(cx, &h.bottleneck, name, form, "bottleneck", "256")
        .map(|n| positive_int(cx, "bottleneck", n, 256))
        .unwrap_or(256);
    let out =
        required(cx, &h.out, name, form, "out", "65536").map(|n| positive_int(cx, "out", n, 65536)).unwrap_or(65536);
    let layers = match &h.layers {
        Some(l) => {
            let n = positive_int(cx, "layers", &l.value, 3);
            if n < 2 {
                cx.error(l.value.span, "`layers` must be at least 2 (input, hidden layers, bottleneck)");
                3
            } else {
                n
            }
        }
        None => 3,
    };
    let norm_last_layer = h.norm_last_layer.as_ref().map(|f| f.value.value).unwrap_or(true);
    HeadIr { hidden, bottleneck, out, layers, norm_last_layer }
}

/// Exactly 2 global crops (DINO's teacher sees the 2 global views); local crops are smaller
/// than global ones; sizes are positive; scales are fractions of the area.
fn crops(cx: &mut Ctxt, c: Option<&CropsInput>, name: &syn::Ident) -> (CropIr, Option<CropIr>) {
    let default = || CropIr { count: 2, size: 224, size_span: Span::call_site(), scale: (0.4, 1.0) };
    let Some(c) = c else { return (default(), None) };
    cx.extend(c.errors.0.clone());
    let global = match required(cx, &c.global, name, "crops block", "global", "2 x 224 scale 0.4..1.0") {
        Some(g) => {
            let count = positive_int(cx, "global count", &g.count, 2);
            if count != 2 {
                cx.error(
                    g.count.span,
                    format!("DINO's teacher sees exactly 2 global crops: write `2 x {}`", g.size.text),
                );
            }
            let size = positive_int(cx, "global size", &g.size, 224);
            CropIr { count: 2, size, size_span: g.size.span, scale: scale_range(cx, &g.scale, (0.4, 1.0)) }
        }
        None => default(),
    };
    let local = c.local.as_ref().map(|l| {
        let l = &l.value;
        let count = positive_int(cx, "local count", &l.count, 1);
        let mut size = positive_int(cx, "local size", &l.size, 1);
        if size >= global.size {
            cx.error(
                l.size.span,
                format!("local crops ({size} px) must be smaller than the global ones ({} px)", global.size),
            );
            size = global.size;
        }
        CropIr { count, size, size_span: l.size.span, scale: scale_range(cx, &l.scale, (0.05, 0.4)) }
    });
    (global, local)
}

/// The teacher temperature is > 0 at both ends; a change of value needs a linear warmup
/// in epochs (DINO warms it up per epoch, then holds it).
fn teacher_temp(cx: &mut Ctxt, s: &Schedule) -> (f64, f64, f64) {
    let start = positive(cx, "teacher_temp", &s.start, 0.04);
    let end = s.end.as_ref().map(|e| positive(cx, "teacher_temp", e, start)).unwrap_or(start);
    if let Some((_, span)) = s.shape {
        cx.error(span, "the teacher temperature warms up linearly; remove the schedule shape");
    }
    let warmup = match (&s.end, &s.warmup) {
        (Some(e), None) if (e.value - s.start.value).abs() > 0.0 => {
            cx.error(e.span, format!("`teacher_temp: {} -> {}` needs `warmup N epochs`", s.start.text, e.text));
            0.0
        }
        (_, Some(w)) => non_negative(cx, "warmup", w),
        _ => 0.0,
    };
    (start, end, warmup)
}

/// The teacher momentum lies in [0, 1] at both ends and follows a cosine (per iteration).
fn teacher_momentum(cx: &mut Ctxt, s: &Schedule) -> (f64, f64) {
    let start = unit(cx, "teacher_momentum", &s.start, 0.996);
    let end = s.end.as_ref().map(|e| unit(cx, "teacher_momentum", e, 1.0)).unwrap_or(start);
    if let Some((Shape::Linear, span)) = s.shape {
        cx.error(span, "the teacher momentum follows a cosine schedule; write `cosine` or nothing");
    }
    if let Some(w) = &s.warmup {
        cx.error(w.span, "the teacher momentum has no warmup");
    }
    (start, end)
}

/// lr > 0 (per a batch size > 0), warmup >= 0 epochs and not longer than training,
/// 0 <= min_lr <= lr, weight decay >= 0 at both ends with no warmup, sgd momentum in [0, 1).
fn optimizer(cx: &mut Ctxt, o: Option<&OptimizerInput>, name: &syn::Ident, epochs: usize) -> OptimizerIr {
    let Some(o) = o else {
        return OptimizerIr {
            kind: OptKind::AdamW,
            lr: 5e-4,
            lr_per: Some(256),
            lr_sqrt: false,
            warmup_epochs: 10.0,
            min_lr: 1e-6,
            weight_decay: (0.04, 0.4),
            momentum: 0.9,
            layer_decay: 1.0,
            patch_embed_lr: 1.0,
        };
    };
    cx.extend(o.errors.0.clone());
    let form = "optimizer block";
    let (lr, lr_per, lr_sqrt) = match required(cx, &o.lr, name, form, "lr", "5e-4 per 256") {
        Some(l) => {
            (positive(cx, "lr", &l.value, 5e-4), l.per.as_ref().map(|p| positive_int(cx, "per", p, 256)), l.sqrt)
        }
        None => (5e-4, Some(256), false),
    };
    let layer_decay = o.layer_decay.as_ref().map(|n| multiplier(cx, "layer_decay", &n.value, "0.9")).unwrap_or(1.0);
    let patch_embed_lr =
        o.patch_embed_lr.as_ref().map(|n| multiplier(cx, "patch_embed_lr", &n.value, "0.2")).unwrap_or(1.0);
    let warmup_epochs = match &o.warmup {
        Some(w) => {
            let v = non_negative(cx, "warmup", &w.value);
            if v > epochs as f64 {
                cx.error(
                    w.value.span,
                    format!("a warmup of {} epochs is longer than the {epochs} epochs of training", w.value.text),
                );
            }
            v
        }
        None => 0.0,
    };
    let min_lr = match &o.min_lr {
        Some(m) => {
            let v = non_negative(cx, "min_lr", &m.value);
            if v > lr {
                cx.error(m.value.span, format!("`min_lr: {}` must not exceed `lr` ({lr})", m.value.text));
            }
            v
        }
        None => 0.0,
    };
    let weight_decay = match &o.weight_decay {
        Some(s) => {
            let s = &s.value;
            let start = non_negative(cx, "weight_decay", &s.start);
            let end = s.end.as_ref().map(|e| non_negative(cx, "weight_decay", e)).unwrap_or(start);
            if let Some(w) = &s.warmup {
                cx.error(w.span, "the weight decay follows a cosine schedule without warmup");
            }
            (start, end)
        }
        None => (0.0, 0.0),
    };
    let kind = match o.kind {
        OptimizerKind::AdamW => OptKind::AdamW,
        OptimizerKind::Sgd => OptKind::Sgd,
    };
    let momentum = match (&o.momentum, kind) {
        (Some(m), OptKind::AdamW) => {
            cx.error(m.key, "`momentum` is an sgd setting (AdamW uses betas 0.9, 0.999)");
            0.9
        }
        (Some(m), OptKind::Sgd) => {
            let v = unit(cx, "momentum", &m.value, 0.9);
            if v >= 1.0 {
                cx.error(m.value.span, "`momentum: 1` never forgets; use a value below 1");
            }
            v
        }
        (None, _) => 0.9,
    };
    OptimizerIr {
        kind,
        lr,
        lr_per,
        lr_sqrt,
        warmup_epochs,
        min_lr,
        weight_decay,
        momentum,
        layer_decay,
        patch_embed_lr,
    }
}

/// An lr multiplier lies in (0, 1]: 0 would freeze what it applies to, and above 1 the early
/// layers would learn faster than the last (1 is off).
fn multiplier(cx: &mut Ctxt, key: &str, n: &Num, dinov2: &str) -> f64 {
    if n.value > 0.0 && n.value <= 1.0 {
        n.value
    } else {
        cx.error(n.span, format!("`{key}: {}` must lie in (0, 1] (1 is off; DINOv2: {dinov2})", n.text));
        1.0
    }
}

/// `clip_grad: NUM (per parameter | per module)?`; a scope needs clipping on.
fn clip_grad(cx: &mut Ctxt, c: Option<&ClipInput>) -> (f64, bool) {
    let Some(c) = c else {
        return (3.0, false);
    };
    let v = non_negative(cx, "clip_grad", &c.value);
    match c.per {
        Some((span, _)) if v == 0.0 => {
            cx.error(span, "`clip_grad: 0` switches clipping off: drop the `per ..` scope, or give a norm > 0");
            (v, false)
        }
        Some((_, per)) => (v, per == ClipPer::Module),
        None => (v, false),
    }
}

pub fn dino(d: DinoInput) -> (DinoIr, Ctxt) {
    let mut cx = Ctxt::default();
    cx.extend(d.errors.0.clone());
    let name = d.name.clone();
    let form = "dino! declaration";
    let h = required(&mut cx, &d.head, &name, form, "head", "{ hidden: 2048, bottleneck: 256, out: 65536 }");
    let head = head(&mut cx, h, &name);
    let c = required(&mut cx, &d.crops, &name, form, "crops", "{ global: 2 x 224 scale 0.4..1.0 }");
    let (global, local) = crops(&mut cx, c, &name);
    let student_temp = required(&mut cx, &d.student_temp, &name, form, "student_temp", "0.1")
        .map(|n| positive(&mut cx, "student_temp", n, 0.1))
        .unwrap_or(0.1);
    let teacher_temp = required(&mut cx, &d.teacher_temp, &name, form, "teacher_temp", "0.04 -> 0.07 warmup 30 epochs")
        .map(|s| teacher_temp(&mut cx, s))
        .unwrap_or((0.04, 0.04, 0.0));
    let center_momentum =
        d.center_momentum.as_ref().map(|n| unit(&mut cx, "center_momentum", &n.value, 0.9)).unwrap_or(0.9);
    let teacher_momentum =
        required(&mut cx, &d.teacher_momentum, &name, form, "teacher_momentum", "0.996 -> 1.0 cosine")
            .map(|s| teacher_momentum(&mut cx, s))
            .unwrap_or((0.996, 1.0));
    let epochs = d.epochs.as_ref().map(|n| positive_int(&mut cx, "epochs", &n.value, 100)).unwrap_or(100);
    let batch_size = d.batch_size.as_ref().map(|n| positive_int(&mut cx, "batch_size", &n.value, 64)).unwrap_or(64);
    let o = required(
        &mut cx,
        &d.optimizer,
        &name,
        form,
        "optimizer",
        "adamw { lr: 5e-4 per 256, warmup: 10 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 }",
    );
    let optimizer = optimizer(&mut cx, o, &name, epochs);
    let (clip_grad, clip_per_module) = clip_grad(&mut cx, d.clip_grad.as_ref().map(|c| &c.value));
    let koleo = d.koleo.as_ref().map(|n| koleo_weight(&mut cx, &n.value)).unwrap_or(0.0);
    let sinkhorn_knopp = d.centering.as_ref().and_then(|c| match &c.value {
        CenteringValue::Ema => None,
        CenteringValue::SinkhornKnopp { iterations } => Some(sk_iterations(&mut cx, iterations)),
    });
    if let (Some(_), Some(cm)) = (sinkhorn_knopp, &d.center_momentum) {
        cx.error(
            cm.key,
            "`center_momentum` has no effect with `centering: sinkhorn_knopp(..)`: the Sinkhorn-Knopp teacher \
             has no center (drop the key, or use `centering: ema`)"
                .to_string(),
        );
    }
    let ibot = d.ibot.as_ref().map(|i| ibot(&mut cx, i));
    let freeze_last_layer =
        d.freeze_last_layer.as_ref().map(|n| count(&mut cx, "freeze_last_layer", &n.value)).unwrap_or(1);
    if let Some(z) = d.freeze_zero_lr.filter(|_| freeze_last_layer == 0) {
        cx.error(z, "`zero_lr` says how the last layer is frozen, and it is frozen for 0 epochs: drop `zero_lr`");
    }
    // schedules in epochs must fit in the training
    if let Some(n) = d.freeze_last_layer.as_ref().filter(|_| freeze_last_layer >= epochs) {
        cx.error(
            n.value.span,
            format!(
                "the last layer would stay frozen for the whole training ({} of {epochs} epochs): it would never \
                 learn; freeze it for fewer epochs (DINO: 1)",
                n.value.text
            ),
        );
    }
    if let Some(w) =
        d.teacher_temp.as_ref().and_then(|t| t.value.warmup.as_ref()).filter(|_| teacher_temp.2 > epochs as f64)
    {
        cx.error(
            w.span,
            format!(
                "a teacher-temperature warmup of {} epochs is longer than the {epochs} epochs of training: the \
                 temperature would never reach {}",
                w.text, teacher_temp.1
            ),
        );
    }
    let augment = augment(&mut cx, d.augment.as_ref().map(|a| &a.value));
    let doc = doc_string(&d.attrs);
    let ir = DinoIr {
        attrs: d.attrs,
        vis: d.vis,
        name: d.name,
        doc,
        backbone: d.backbone,
        head,
        global,
        local,
        student_temp,
        teacher_temp,
        center_momentum,
        teacher_momentum,
        optimizer,
        clip_grad,
        clip_per_module,
        freeze_last_layer,
        freeze_zero_lr: d.freeze_zero_lr.is_some(),
        epochs,
        batch_size,
        augment,
        koleo,
        sinkhorn_knopp,
        ibot,
    };
    (ir, cx)
}

/// Sinkhorn-Knopp runs 1 to 100 iterations: DINOv2 runs 3, and each alternates a row and a
/// column normalization of the whole batch's assignments.
fn sk_iterations(cx: &mut Ctxt, n: &Num) -> usize {
    if n.is_int && (1.0..=100.0).contains(&n.value) {
        n.usize()
    } else {
        cx.error(n.span, format!("`sinkhorn_knopp({})` needs 1 to 100 iterations (DINOv2 runs 3)", n.text));
        3
    }
}

/// iBOT's rules: a weight in (0, 10] (0 would build the masked student for nothing: drop the
/// block instead), mask ratios inside (0, 1) with the smaller first (a crop with no patch
/// masked teaches nothing; one with all masked leaves the student nothing to see), a mask
/// probability in (0, 1].
fn ibot(cx: &mut Ctxt, i: &Keyed<IbotInput>) -> IbotIr {
    let d = IbotIr { weight: 1.0, mask_ratio: (0.1, 0.5), mask_probability: 0.5, separate_head: false, span: i.key };
    let v = &i.value;
    cx.extend(v.errors.0.clone());
    let weight = match &v.weight {
        Some(w) if w.value.value == 0.0 => {
            cx.error(w.value.span, "`weight: 0` switches iBOT off: drop the `ibot` block instead".to_string());
            d.weight
        }
        Some(w) if !(w.value.value > 0.0 && w.value.value <= 10.0) => {
            cx.error(w.value.span, format!("`weight: {}` must lie in (0, 10] (DINOv2 weighs iBOT 1.0)", w.value.text));
            d.weight
        }
        Some(w) => w.value.value,
        None => d.weight,
    };
    let mask_ratio = match &v.mask_ratio {
        Some(r) => {
            let (lo, hi) = (r.value.lo.value, r.value.hi.value);
            let inside = |v: f64| 0.0 < v && v < 1.0;
            if !(inside(lo) && inside(hi)) {
                // the caret under the bound that is outside
                let span = if inside(lo) { r.value.hi.span } else { r.value.lo.span };
                cx.error(
                    span,
                    format!(
                        "mask ratios {}..{} must lie inside (0, 1): a fraction of the patches (DINOv2: 0.1..0.5)",
                        r.value.lo.text, r.value.hi.text
                    ),
                );
                d.mask_ratio
            } else if lo >= hi {
                cx.error(
                    r.value.span,
                    format!(
                        "mask ratios {}..{} must be ordered, the smaller first (DINOv2: 0.1..0.5)",
                        r.value.lo.text, r.value.hi.text
                    ),
                );
                d.mask_ratio
            } else {
                (lo, hi)
            }
        }
        None => d.mask_ratio,
    };
    let mask_probability = match &v.mask_probability {
        Some(p) if !(p.value.value > 0.0 && p.value.value <= 1.0) => {
            cx.error(
                p.value.span,
                format!(
                    "`mask_probability: {}` must lie in (0, 1]: the fraction of global crops that get a mask \
                     (DINOv2: 0.5)",
                    p.value.text
                ),
            );
            d.mask_probability
        }
        Some(p) => p.value.value,
        None => d.mask_probability,
    };
    let separate_head = v.separate_head.as_ref().map(|f| f.value.value).unwrap_or(false);
    IbotIr { weight, mask_ratio, mask_probability, separate_head, span: i.key }
}

/// KoLeo's weight lies in [0, 1]: DINOv2 uses 0.1, and a weight as large as the DINO loss's
/// own (1) already lets the spreading term dominate the objective.
fn koleo_weight(cx: &mut Ctxt, n: &Num) -> f64 {
    if (0.0..=1.0).contains(&n.value) {
        n.value
    } else {
        cx.error(n.span, format!("`koleo: {}` must lie in [0, 1] (DINOv2 weighs KoLeo 0.1)", n.text));
        0.0
    }
}
