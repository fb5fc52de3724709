//! The values of the DSL: numbers, ranges, schedules, crop groups; each keeps its tokens'
//! span so errors point at what the user wrote.
use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{LitFloat, LitInt, Token};

use crate::kw;

/// A number as written (`224`, `0.04`, `5e-4`, `-1`), with its span.
#[derive(Debug, Clone)]
pub struct Num {
    pub value: f64,
    pub is_int: bool,
    pub text: String,
    pub span: Span,
}

impl Num {
    /// The value as a count (callers validate integrality first).
    pub fn usize(&self) -> usize {
        self.value.max(0.0) as usize
    }
}

/// Grammar: `-`? (INT | FLOAT)
impl Parse for Num {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let neg: Option<Token![-]> = input.parse()?;
        let sign = if neg.is_some() { -1.0 } else { 1.0 };
        let prefix = if neg.is_some() { "-" } else { "" };
        let la = input.lookahead1();
        if la.peek(LitInt) {
            let l: LitInt = input.parse()?;
            if !l.suffix().is_empty() {
                let hint = if l.suffix().starts_with('x') {
                    format!(": write the count and the size apart, `{} x {}`", l.base10_digits(), &l.suffix()[1..])
                } else {
                    String::new()
                };
                return Err(syn::Error::new(l.span(), format!("`{l}` is not a number{hint}")));
            }
            let v: f64 = l.base10_parse::<u64>()? as f64;
            let span = neg.map(|n| n.span.join(l.span()).unwrap_or(l.span())).unwrap_or(l.span());
            Ok(Num { value: sign * v, is_int: true, text: format!("{prefix}{}", l.base10_digits()), span })
        } else if la.peek(LitFloat) {
            let l: LitFloat = input.parse()?;
            if !l.suffix().is_empty() {
                return Err(syn::Error::new(l.span(), format!("`{l}` is not a number (no type suffix)")));
            }
            let v: f64 = l.base10_parse()?;
            if !v.is_finite() {
                return Err(syn::Error::new(l.span(), format!("`{l}` is too large for a number (beyond 1.8e308)")));
            }
            let span = neg.map(|n| n.span.join(l.span()).unwrap_or(l.span())).unwrap_or(l.span());
            Ok(Num { value: sign * v, is_int: false, text: format!("{prefix}{}", l.base10_digits()), span })
        } else if input.peek(syn::token::Paren) {
            Err(syn::Error::new(
                input.span(),
                "expected a number, not a tuple: write one number (ranges are `lo..hi`, lists `[a, b]`)",
            ))
        } else if input.peek(syn::LitStr) {
            Err(syn::Error::new(
                input.span(),
                "expected a number, not a string: write the number itself, without quotes",
            ))
        } else {
            Err(la.error())
        }
    }
}

/// A closed range of numbers. Grammar: `NUM .. NUM`
#[derive(Debug, Clone)]
pub struct Range {
    pub lo: Num,
    pub hi: Num,
    pub span: Span,
}

impl Parse for Range {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let lo: Num = input.parse()?;
        input.parse::<Token![..]>()?;
        let hi: Num = input.parse()?;
        let span = lo.span.join(hi.span).unwrap_or(lo.span);
        Ok(Range { lo, hi, span })
    }
}

/// The shape of a schedule between its endpoints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    Cosine,
    Linear,
}

/// A scheduled value.
/// Grammar: `NUM` | `NUM -> NUM` (`warmup NUM (epochs|epoch)`)? (`cosine` | `linear`)?
#[derive(Debug, Clone)]
pub struct Schedule {
    pub start: Num,
    pub end: Option<Num>,
    pub warmup: Option<Num>,
    pub shape: Option<(Shape, Span)>,
}

/// `epochs` or `epoch` after a count.
pub fn parse_epochs(input: ParseStream) -> syn::Result<()> {
    let la = input.lookahead1();
    if la.peek(kw::epochs) {
        input.parse::<kw::epochs>()?;
    } else if la.peek(kw::epoch) {
        input.parse::<kw::epoch>()?;
    } else {
        return Err(la.error());
    }
    Ok(())
}

impl Parse for Schedule {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let start: Num = input.parse()?;
        let mut s = Schedule { start, end: None, warmup: None, shape: None };
        if input.peek(Token![->]) {
            input.parse::<Token![->]>()?;
            s.end = Some(input.parse()?);
        }
        if input.peek(kw::warmup) {
            input.parse::<kw::warmup>()?;
            s.warmup = Some(input.parse()?);
            parse_epochs(input)?;
        }
        if input.peek(kw::cosine) {
            s.shape = Some((Shape::Cosine, input.parse::<kw::cosine>()?.span));
        } else if input.peek(kw::linear) {
            s.shape = Some((Shape::Linear, input.parse::<kw::linear>()?.span));
        }
        Ok(s)
    }
}

/// A group of crops. Grammar: `NUM x NUM scale RANGE`
#[derive(Debug, Clone)]
pub struct Crops {
    pub count: Num,
    pub size: Num,
    pub scale: Range,
}

impl Parse for Crops {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let count: Num = input.parse()?;
        input.parse::<kw::x>()?;
        let size: Num = input.parse()?;
        input.parse::<kw::scale>()?;
        let scale: Range = input.parse()?;
        Ok(Crops { count, size, scale })
    }
}

/// A bracketed list of numbers. Grammar: `[ NUM, ... ]`
#[derive(Debug, Clone)]
pub struct NumList {
    pub items: Vec<Num>,
    pub span: Span,
}

impl Parse for NumList {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let content;
        let b = syn::bracketed!(content in input);
        let items = content.parse_terminated(Num::parse, Token![,])?.into_iter().collect();
        Ok(NumList { items, span: b.span.join() })
    }
}

/// `true` or `false`.
#[derive(Debug, Clone)]
pub struct Flag {
    pub value: bool,
}

impl Parse for Flag {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let b: syn::LitBool = input.parse()?;
        Ok(Flag { value: b.value })
    }
}

/// `mlp:`'s value: the hidden width (`1536`, a GELU MLP) or the feed-forward kind (`gelu`,
/// `swiglu`; the width then comes from `mlp_ratio`).
#[derive(Debug, Clone)]
pub enum MlpValue {
    Width(Num),
    Kind { swiglu: bool },
}

/// Grammar: `gelu` | `swiglu` | NUM
impl Parse for MlpValue {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(kw::swiglu) {
            input.parse::<kw::swiglu>()?;
            Ok(MlpValue::Kind { swiglu: true })
        } else if input.peek(kw::gelu) {
            input.parse::<kw::gelu>()?;
            Ok(MlpValue::Kind { swiglu: false })
        } else if input.peek(syn::Ident) {
            let id: syn::Ident = input.parse()?;
            Err(syn::Error::new(id.span(), format!("unknown MLP `{id}`: expected `gelu`, `swiglu` or a width")))
        } else {
            Ok(MlpValue::Width(input.parse()?))
        }
    }
}

/// `interpolation:`'s value: DINO's `bicubic` (scale `(g + 0.1) / g0`) or DINOv2's
/// `antialiased` (its models with registers).
#[derive(Debug, Clone)]
pub struct InterpolationValue {
    pub antialiased: bool,
}

/// Grammar: `bicubic` | `antialiased`
impl Parse for InterpolationValue {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let la = input.lookahead1();
        if la.peek(kw::bicubic) {
            input.parse::<kw::bicubic>()?;
            Ok(InterpolationValue { antialiased: false })
        } else if la.peek(kw::antialiased) {
            input.parse::<kw::antialiased>()?;
            Ok(InterpolationValue { antialiased: true })
        } else {
            Err(la.error())
        }
    }
}

/// A `centering:` value.
pub enum CenteringValue {
    /// DINO's running center of the teacher's outputs (`center_momentum`).
    Ema,
    /// DINOv2's Sinkhorn-Knopp normalization of the teacher, this many iterations.
    SinkhornKnopp { iterations: Num },
}

/// Grammar: `ema` | `sinkhorn_knopp(INT)`
impl Parse for CenteringValue {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let la = input.lookahead1();
        if la.peek(kw::ema) {
            input.parse::<kw::ema>()?;
            Ok(CenteringValue::Ema)
        } else if la.peek(kw::sinkhorn_knopp) {
            input.parse::<kw::sinkhorn_knopp>()?;
            let inner;
            syn::parenthesized!(inner in input);
            Ok(CenteringValue::SinkhornKnopp { iterations: inner.parse()? })
        } else {
            Err(la.error())
        }
    }
}
