//! Validation: one function per rule, each error spanned on the offending token and saying
//! how to fix it. Every error is collected so the user sees all of them at once; invalid
//! values are replaced by harmless ones so code generation can still emit the items (no
//! cascade of follow-up errors).
use proc_macro2::Span;

use crate::ir::*;
use crate::parse::dino::{AugmentInput, CropsInput, DinoInput, HeadInput, OptimizerInput, OptimizerKind, Switch};
use crate::parse::value::{Num, Range, Schedule, Shape};
use crate::parse::vit::VitInput;
use crate::parse::{doc_string, missing, Keyed};

/// Collected errors.
#[derive(Default)]
pub struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    pub fn error(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new(span, msg));
    }
    pub fn extend(&mut self, more: Vec<syn::Error>) {
        self.errors.extend(more);
    }
    /// All errors as one (`None` if there are none).
    pub fn finish(self) -> Option<syn::Error> {
        self.errors.into_iter().reduce(|mut a, b| {
            a.combine(b);
            a
        })
    }
}

// ---- generic rules ----------------------------------------------------------------------

/// A count is a positive integer.
fn positive_int(cx: &mut Ctxt, key: &str, n: &Num, fallback: usize) -> usize {
    if !n.is_int || n.value < 1.0 {
        cx.error(n.span, format!("`{key}: {}` must be a positive integer", n.text));
        fallback
    } else {
        n.usize()
    }
}

/// A count that may be zero is a non-negative integer.
fn count(cx: &mut Ctxt, key: &str, n: &Num) -> usize {
    if !n.is_int || n.value < 0.0 {
        cx.error(n.span, format!("`{key}: {}` must be a whole number (0 or more)", n.text));
        0
    } else {
        n.usize()
    }
}

/// A value is > 0.
fn positive(cx: &mut Ctxt, key: &str, n: &Num, fallback: f64) -> f64 {
    if n.value > 0.0 {
        n.value
    } else {
        cx.error(n.span, format!("`{key}: {}` must be > 0", n.text));
        fallback
    }
}

/// A value is >= 0.
fn non_negative(cx: &mut Ctxt, key: &str, n: &Num) -> f64 {
    if n.value >= 0.0 {
        n.value
    } else {
        cx.error(n.span, format!("`{key}: {}` must be >= 0", n.text));
        0.0
    }
}

/// A probability or a momentum lies in [0, 1].
fn unit(cx: &mut Ctxt, key: &str, n: &Num, fallback: f64) -> f64 {
    if (0.0..=1.0).contains(&n.value) {
        n.value
    } else {
        cx.error(n.span, format!("`{key}: {}` must lie in [0, 1]", n.text));
        fallback
    }
}

/// A crop scale range lies in (0, 1] and is ordered.
fn scale_range(cx: &mut Ctxt, r: &Range, fallback: (f64, f64)) -> (f64, f64) {
    let (lo, hi) = (r.lo.value, r.hi.value);
    if !(lo > 0.0 && hi <= 1.0 && lo < hi) {
        cx.error(
            r.span,
            format!(
                "scale `{}..{}` must satisfy 0 < low < high <= 1 (a fraction of the image area)",
                r.lo.text, r.hi.text
            ),
        );
        return fallback;
    }
    (lo, hi)
}

/// A required key is present.
fn required<'a, T>(
    cx: &mut Ctxt,
    slot: &'a Option<Keyed<T>>,
    name: &syn::Ident,
    form: &str,
    key: &str,
    example: &str,
) -> Option<&'a T> {
    if slot.is_none() {
        cx.errors.push(missing(name, form, key, example));
    }
    slot.as_ref().map(|k| &k.value)
}

fn divisors_near(n: usize, around: usize) -> String {
    let mut d: Vec<usize> = (1..=n).filter(|d| n % d == 0).collect();
    d.sort_by_key(|d| (*d as i64 - around as i64).abs());
    let mut pick: Vec<usize> = d.into_iter().take(3).collect();
    pick.sort_unstable();
    pick.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
}

// ---- vit! -------------------------------------------------------------------------------

/// `heads` divides `dim` (each head gets `dim / heads` channels).
fn heads_divide_dim(cx: &mut Ctxt, heads: &Num, dim: usize) -> usize {
    let h = positive_int(cx, "heads", heads, 1);
    if dim % h != 0 {
        cx.error(heads.span, format!("`heads: {h}` must divide `dim: {dim}` (try {})", divisors_near(dim, h)));
        return 1;
    }
    h
}

/// `patch` divides `image` (the image is a whole grid of patches).
fn patch_divides_image(cx: &mut Ctxt, patch: &Num, image: usize) -> usize {
    let p = positive_int(cx, "patch", patch, 1);
    if image % p != 0 {
        cx.error(patch.span, format!("`patch: {p}` must divide `image: {image}` (try {})", divisors_near(image, p)));
        return 1;
    }
    p
}

/// The MLP width is a positive integer: `mlp: INT`, or `mlp_ratio` times `dim`.
fn mlp_width(cx: &mut Ctxt, v: &VitInput, dim: usize) -> usize {
    match (&v.mlp, &v.mlp_ratio) {
        (Some(m), Some(r)) => {
            cx.error(r.key, "give either `mlp` or `mlp_ratio`, not both");
            positive_int(cx, "mlp", &m.value, 4 * dim)
        }
        (Some(m), None) => positive_int(cx, "mlp", &m.value, 4 * dim),
        (None, Some(r)) => {
            let w = r.value.value * dim as f64;
            if r.value.value <= 0.0 || (w - w.round()).abs() > 1e-9 {
                cx.error(
                    r.value.span,
                    format!("`mlp_ratio: {}` times `dim: {dim}` must be a positive integer", r.value.text),
                );
                4 * dim
            } else {
                w.round() as usize
            }
        }
        (None, None) => 4 * dim,
    }
}

pub fn vit(v: VitInput) -> (VitIr, Ctxt) {
    let mut cx = Ctxt::default();
    cx.extend(v.errors.0.clone());
    let name = &v.name;
    let form = "vit! declaration";
    let image = required(&mut cx, &v.image, name, form, "image", "224")
        .map(|n| positive_int(&mut cx, "image", n, 224))
        .unwrap_or(224);
    let dim = required(&mut cx, &v.dim, name, form, "dim", "384")
        .map(|n| positive_int(&mut cx, "dim", n, 384))
        .unwrap_or(384);
    let depth = required(&mut cx, &v.depth, name, form, "depth", "12")
        .map(|n| positive_int(&mut cx, "depth", n, 1))
        .unwrap_or(1);
    let heads =
        required(&mut cx, &v.heads, name, form, "heads", "6").map(|n| heads_divide_dim(&mut cx, n, dim)).unwrap_or(1);
    let patch = required(&mut cx, &v.patch, name, form, "patch", "16")
        .map(|n| patch_divides_image(&mut cx, n, image))
        .unwrap_or(1);
    let channels = v.channels.as_ref().map(|n| positive_int(&mut cx, "channels", &n.value, 3)).unwrap_or(3);
    let mlp = mlp_width(&mut cx, &v, dim);
    let norm_eps = v.norm_eps.as_ref().map(|n| positive(&mut cx, "norm_eps", &n.value, 1e-6)).unwrap_or(1e-6);
    let drop_path = v
        .drop_path
        .as_ref()
        .map(|n| {
            let d = unit(&mut cx, "drop_path", &n.value, 0.0);
            if d >= 1.0 {
                cx.error(n.value.span, "`drop_path: 1` would drop every block; use a rate below 1");
                0.0
            } else {
                d
            }
        })
        .unwrap_or(0.0);
    let qkv_bias = v.qkv_bias.as_ref().map(|f| f.value.value).unwrap_or(true);
    let doc = doc_string(&v.attrs);
    let ir = VitIr {
        attrs: v.attrs,
        vis: v.vis,
        name: v.name,
        doc,
        image,
        patch,
        channels,
        dim,
        depth,
        heads,
        mlp,
        qkv_bias,
        norm_eps,
        drop_path,
    };
    (ir, cx)
}

// ---- dino! ------------------------------------------------------------------------------

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
            warmup_epochs: 10.0,
            min_lr: 1e-6,
            weight_decay: (0.04, 0.4),
            momentum: 0.9,
        };
    };
    cx.extend(o.errors.0.clone());
    let form = "optimizer block";
    let (lr, lr_per) = match required(cx, &o.lr, name, form, "lr", "5e-4 per 256") {
        Some(l) => (positive(cx, "lr", &l.value, 5e-4), l.per.as_ref().map(|p| positive_int(cx, "per", p, 256))),
        None => (5e-4, Some(256)),
    };
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
    OptimizerIr { kind, lr, lr_per, warmup_epochs, min_lr, weight_decay, momentum }
}

fn probability(cx: &mut Ctxt, key: &str, n: &Num) -> f64 {
    unit(cx, key, n, 0.0)
}

/// Probabilities in [0, 1]; jitter strengths >= 0 (hue <= 0.5); blur sigma 0 < low <= high
/// with 3 probabilities (global 1, global 2, local) and an odd kernel; solarize threshold in
/// [0, 1]; normalize mean and std of equal length, std > 0.
fn augment(cx: &mut Ctxt, a: Option<&AugmentInput>) -> AugmentIr {
    let mut ir = AugmentIr {
        flip: 0.5,
        color_jitter: Some(([0.4, 0.4, 0.2, 0.1], 0.8)),
        grayscale: 0.2,
        blur: Some(((0.1, 2.0), [1.0, 0.1, 0.5], 0)),
        solarize: Some((0.5, 0.2)),
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        normalize_span: None,
    };
    let Some(a) = a else { return ir };
    cx.extend(a.errors.0.clone());
    if let Some(f) = &a.flip {
        ir.flip = probability(cx, "flip", &f.value);
    }
    if let Some(j) = &a.color_jitter {
        ir.color_jitter = match &j.value {
            Switch::Off => None,
            Switch::On(j) => {
                let mut s = [0.0; 4];
                if j.strengths.items.len() != 4 {
                    cx.error(j.strengths.span, "color_jitter takes [brightness, contrast, saturation, hue]");
                } else {
                    for (i, n) in j.strengths.items.iter().enumerate() {
                        s[i] = non_negative(cx, "color_jitter", n);
                    }
                    if s[3] > 0.5 {
                        cx.error(j.strengths.items[3].span, "the hue jitter must lie in [0, 0.5]");
                    }
                }
                Some((s, probability(cx, "p", &j.p)))
            }
        };
    }
    if let Some(g) = &a.grayscale {
        ir.grayscale = match &g.value {
            Switch::Off => 0.0,
            Switch::On(n) => probability(cx, "grayscale", n),
        };
    }
    if let Some(b) = &a.blur {
        ir.blur = match &b.value {
            Switch::Off => None,
            Switch::On(b) => {
                let (lo, hi) = (b.sigma.lo.value, b.sigma.hi.value);
                if !(lo > 0.0 && lo <= hi) {
                    cx.error(b.sigma.span, "blur sigma must satisfy 0 < low <= high");
                }
                let mut p = [0.0; 3];
                if b.p.items.len() != 3 {
                    cx.error(b.p.span, "blur takes 3 probabilities: [global 1, global 2, local]");
                } else {
                    for (i, n) in b.p.items.iter().enumerate() {
                        p[i] = probability(cx, "blur p", n);
                    }
                }
                let kernel = match &b.kernel {
                    Some(k) => {
                        let v = positive_int(cx, "kernel", k, 3);
                        if v % 2 == 0 {
                            cx.error(k.span, format!("the blur kernel must be odd (try {})", v + 1));
                        }
                        v
                    }
                    None => 0,
                };
                Some(((lo.max(1e-3), hi.max(lo)), p, kernel))
            }
        };
    }
    if let Some(s) = &a.solarize {
        ir.solarize = match &s.value {
            Switch::Off => None,
            Switch::On(s) => Some((unit(cx, "threshold", &s.threshold, 0.5), probability(cx, "p", &s.p))),
        };
    }
    if let Some(n) = &a.normalize {
        let n = &n.value;
        if n.mean.items.len() != n.std.items.len() {
            cx.error(n.std.span, "normalize needs one mean and one std per channel");
        } else {
            ir.mean = n.mean.items.iter().map(|m| m.value).collect();
            ir.std = n.std.items.iter().map(|s| positive(cx, "std", s, 1.0)).collect();
            ir.normalize_span = Some(n.mean.span);
        }
    }
    ir
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
    let clip_grad = d.clip_grad.as_ref().map(|n| non_negative(&mut cx, "clip_grad", &n.value)).unwrap_or(3.0);
    let freeze_last_layer =
        d.freeze_last_layer.as_ref().map(|n| count(&mut cx, "freeze_last_layer", &n.value)).unwrap_or(1);
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
        freeze_last_layer,
        epochs,
        batch_size,
        augment,
    };
    (ir, cx)
}
