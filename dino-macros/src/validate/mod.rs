//! Validation: one function per rule, each error spanned on the offending token and saying
//! how to fix it. Every error is collected so the user sees all of them at once; invalid
//! values are replaced by harmless ones so code generation can still emit the items (no
//! cascade of follow-up errors).
//!
//! Generic rules live here; those of `vit!` in `vit_rules`, of `dino!` in `dino_rules`
//! (its augmentation switches in `augment`).
mod augment;
mod dino_rules;
mod vit_rules;

pub use dino_rules::dino;
pub use vit_rules::vit;

use proc_macro2::Span;

use crate::ir::*;
use crate::parse::dino::{
    AugmentInput, ClipInput, CropsInput, DinoInput, HeadInput, IbotInput, OptimizerInput, OptimizerKind, Switch,
};
use crate::parse::optimizer::ClipPer;
use crate::parse::value::{CenteringValue, MlpValue, Num, Range, Schedule, Shape};
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

/// Up to 3 divisors of `n` nearest `around`, for a hint. Divisors come in pairs `(d, n / d)`
/// with `d <= sqrt(n)`; the search stops at a million (an absurd `n` gets a hint from the
/// divisors found, not a macro that never returns).
fn divisors_near(n: usize, around: usize) -> String {
    let mut d: Vec<usize> = (1..=n.isqrt().min(1_000_000)).filter(|d| n % d == 0).flat_map(|d| [d, n / d]).collect();
    d.sort_unstable();
    d.dedup();
    d.sort_by_key(|d| (*d as i64 - around as i64).abs());
    let mut pick: Vec<usize> = d.into_iter().take(3).collect();
    pick.sort_unstable();
    pick.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
}
