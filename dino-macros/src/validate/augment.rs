//! The rules of `dino!`'s augmentation switches.
use super::*;
use crate::parse::value::NumList;

fn probability(cx: &mut Ctxt, key: &str, n: &Num) -> f64 {
    unit(cx, key, n, 0.0)
}

/// Exactly `N` numbers, each checked by `each`; otherwise `wrong_len` on the list (and zeros).
fn fixed<const N: usize>(
    cx: &mut Ctxt,
    list: &NumList,
    wrong_len: &str,
    mut each: impl FnMut(&mut Ctxt, &Num) -> f64,
) -> [f64; N] {
    let mut v = [0.0; N];
    if list.items.len() != N {
        cx.error(list.span, wrong_len);
    } else {
        for (x, n) in v.iter_mut().zip(&list.items) {
            *x = each(cx, n);
        }
    }
    v
}

/// Probabilities in [0, 1]; jitter strengths >= 0 (hue <= 0.5); blur sigma 0 < low <= high
/// with 3 probabilities (global 1, global 2, local) and an odd kernel; solarize threshold in
/// [0, 1]; normalize mean and std of equal length, std > 0.
pub(super) fn augment(cx: &mut Ctxt, a: Option<&AugmentInput>) -> AugmentIr {
    let mut ir = AugmentIr {
        flip: 0.5,
        color_jitter: Some(([0.4, 0.4, 0.2, 0.1], 0.8)),
        grayscale: 0.2,
        blur: Some(((0.1, 2.0), [1.0, 0.1, 0.5], 0)),
        solarize: Some((0.5, 0.2)),
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        normalize_span: None,
        normalize_refused: false,
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
                let s: [f64; 4] =
                    fixed(cx, &j.strengths, "color_jitter takes [brightness, contrast, saturation, hue]", |cx, n| {
                        non_negative(cx, "color_jitter", n)
                    });
                if s[3] > 0.5 {
                    cx.error(j.strengths.items[3].span, "the hue jitter must lie in [0, 0.5]");
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
                let p: [f64; 3] =
                    fixed(cx, &b.p, "blur takes 3 probabilities: [global 1, global 2, local]", |cx, n| {
                        probability(cx, "blur p", n)
                    });
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
            ir.normalize_refused = true;
        } else if n.mean.items.len() > 4 {
            cx.error(n.mean.span, "normalize takes at most 4 channels (RGBA); this list has more");
            ir.normalize_refused = true;
        } else {
            ir.mean = n.mean.items.iter().map(|m| m.value).collect();
            ir.std = n.std.items.iter().map(|s| positive(cx, "std", s, 1.0)).collect();
            ir.normalize_span = Some(n.mean.span);
        }
    }
    ir
}
