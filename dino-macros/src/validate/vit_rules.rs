//! The rules of `vit!`.
use super::*;

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

/// The MLP: its kind, and its width, a positive integer: `mlp: INT`, or `mlp_ratio` times
/// `dim` (default 4). SwiGLU's hidden width is DINOv2's from that width: two thirds of it,
/// rounded up to a multiple of 8 (`SwiGLUFFNFused`).
fn mlp(cx: &mut Ctxt, v: &VitInput, dim: usize) -> (usize, bool) {
    let swiglu = matches!(v.mlp.as_ref().map(|m| &m.value), Some(MlpValue::Kind { swiglu: true }));
    let width = mlp_width(cx, v, dim);
    if swiglu {
        ((width / 3).saturating_mul(2).saturating_add(width % 3 * 2 / 3).div_ceil(8).saturating_mul(8), true)
    } else {
        (width, false)
    }
}

fn mlp_width(cx: &mut Ctxt, v: &VitInput, dim: usize) -> usize {
    let width = v.mlp.as_ref().and_then(|m| match &m.value {
        MlpValue::Width(n) => Some(n),
        MlpValue::Kind { .. } => None,
    });
    match (width, &v.mlp_ratio) {
        (Some(m), Some(r)) => {
            cx.error(r.key, "give either `mlp` or `mlp_ratio`, not both");
            positive_int(cx, "mlp", m, dim.saturating_mul(4))
        }
        (Some(m), None) => positive_int(cx, "mlp", m, dim.saturating_mul(4)),
        (None, Some(r)) => {
            let w = r.value.value * dim as f64;
            if r.value.value <= 0.0 || (w - w.round()).abs() > 1e-9 {
                cx.error(
                    r.value.span,
                    format!("`mlp_ratio: {}` times `dim: {dim}` must be a positive integer", r.value.text),
                );
                dim.saturating_mul(4)
            } else {
                w.round() as usize
            }
        }
        (None, None) => dim.saturating_mul(4),
    }
}

/// LayerScale's initial `gamma`: positive and at most 1 (it scales a residual branch down
/// at the start; the references use 1e-5 to 0.1, and a larger value is a typo for another key).
fn layer_scale_init(cx: &mut Ctxt, n: &Num) -> f64 {
    let g = positive(cx, "layer_scale", n, 1e-5);
    if g > 1.0 {
        cx.error(n.span, format!("`layer_scale: {}` must be at most 1 (DINOv2 starts LayerScale at 1e-5)", n.text));
        return 1e-5;
    }
    g
}

/// Register tokens: a whole number from 0 to 16 (the registers paper trains 0 to 16; DINOv2
/// releases 4).
fn register_count(cx: &mut Ctxt, n: &Num) -> usize {
    if n.value < 0.0 || n.value.fract() != 0.0 || n.value > 16.0 {
        cx.error(n.span, format!("`registers: {}` must be a whole number from 0 to 16 (DINOv2 uses 4)", n.text));
        return 0;
    }
    n.value as usize
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
    let (mlp, swiglu) = mlp(&mut cx, &v, dim);
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
    let layer_scale = v.layer_scale.as_ref().map(|n| layer_scale_init(&mut cx, &n.value));
    let registers = v.registers.as_ref().map(|n| register_count(&mut cx, &n.value)).unwrap_or(0);
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
        swiglu,
        qkv_bias,
        norm_eps,
        drop_path,
        layer_scale,
        registers,
        antialiased: v.interpolation.as_ref().is_some_and(|i| i.value.antialiased),
    };
    (ir, cx)
}
