//! The `optimizer` block of `dino!` and the values that shape the update (lr, clipping).
use syn::parse::{Parse, ParseStream};
use syn::Token;

use super::value::{parse_epochs, Num, Schedule};
use super::{fields, set, skip_value, Errors, Keyed};
use crate::kw;

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    AdamW,
    Sgd,
}

/// `NUM` or `NUM per INT sqrt?` (the lr scales with the batch size over that base: linearly,
/// or by the square root of the ratio with `sqrt`).
pub struct Lr {
    pub value: Num,
    pub per: Option<Num>,
    pub sqrt: bool,
}

impl Parse for Lr {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let value = input.parse()?;
        let (per, sqrt) = if input.peek(kw::per) {
            input.parse::<kw::per>()?;
            let per = input.parse()?;
            let sqrt = input.peek(kw::sqrt);
            if sqrt {
                input.parse::<kw::sqrt>()?;
            }
            (Some(per), sqrt)
        } else if input.peek(kw::sqrt) {
            let k = input.parse::<kw::sqrt>()?;
            return Err(syn::Error::new(
                k.span,
                "`sqrt` scales the lr by the square root of the batch over a base batch: name the base, e.g. \
                 `lr: 4e-3 per 1024 sqrt` (DINOv2)",
            ));
        } else {
            (None, false)
        };
        Ok(Lr { value, per, sqrt })
    }
}

/// What the clipping norm is taken over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClipPer {
    Parameter,
    Module,
}

/// `NUM (per (parameter | module))?`
pub struct ClipInput {
    pub value: Num,
    pub per: Option<(proc_macro2::Span, ClipPer)>,
}

impl Parse for ClipInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let value = input.parse()?;
        if !input.peek(kw::per) {
            return Ok(ClipInput { value, per: None });
        }
        input.parse::<kw::per>()?;
        let la = input.lookahead1();
        let per = if la.peek(kw::parameter) {
            (input.parse::<kw::parameter>()?.span, ClipPer::Parameter)
        } else if la.peek(kw::module) {
            (input.parse::<kw::module>()?.span, ClipPer::Module)
        } else {
            return Err(la.error());
        };
        Ok(ClipInput { value, per: Some(per) })
    }
}

/// The optimizer and its schedules.
///
/// Grammar: `(adamw | sgd) { lr: NUM (per INT sqrt?)?, warmup: NUM epochs, min_lr: NUM,
/// weight_decay: SCHEDULE, momentum: NUM, layer_decay: NUM, patch_embed_lr: NUM }`
/// (`momentum` for sgd only; the last two are DINOv2's lr multipliers).
pub struct OptimizerInput {
    pub kind: OptimizerKind,
    pub lr: Option<Keyed<Lr>>,
    pub warmup: Option<Keyed<Num>>,
    pub min_lr: Option<Keyed<Num>>,
    pub weight_decay: Option<Keyed<Schedule>>,
    pub momentum: Option<Keyed<Num>>,
    pub layer_decay: Option<Keyed<Num>>,
    pub patch_embed_lr: Option<Keyed<Num>>,
    pub errors: Errors,
}

impl Parse for OptimizerInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let la = input.lookahead1();
        let kind = if la.peek(kw::adamw) {
            input.parse::<kw::adamw>()?;
            OptimizerKind::AdamW
        } else if la.peek(kw::sgd) {
            input.parse::<kw::sgd>()?;
            OptimizerKind::Sgd
        } else {
            return Err(la.error());
        };
        let body;
        syn::braced!(body in input);
        let mut o = OptimizerInput {
            kind,
            lr: None,
            warmup: None,
            min_lr: None,
            weight_decay: None,
            momentum: None,
            layer_decay: None,
            patch_embed_lr: None,
            errors: Errors::default(),
        };
        fields(&body, |input| {
            let la = input.lookahead1();
            let e = &mut o.errors;
            if la.peek(kw::lr) {
                key!(input, e, o.lr, lr)
            } else if la.peek(kw::warmup) {
                epochs_key!(input, e, o.warmup, warmup)
            } else if la.peek(kw::min_lr) {
                key!(input, e, o.min_lr, min_lr)
            } else if la.peek(kw::weight_decay) {
                key!(input, e, o.weight_decay, weight_decay)
            } else if la.peek(kw::momentum) {
                key!(input, e, o.momentum, momentum)
            } else if la.peek(kw::layer_decay) {
                key!(input, e, o.layer_decay, layer_decay)
            } else if la.peek(kw::patch_embed_lr) {
                key!(input, e, o.patch_embed_lr, patch_embed_lr)
            } else {
                e.push(super::unknown_key(input, la.error()));
                skip_value(input)?;
            }
            Ok(())
        })?;
        Ok(o)
    }
}
