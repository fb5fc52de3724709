//! The `dino!` form and its blocks.
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Ident, Path, Token, Visibility};

pub use super::optimizer::{ClipInput, OptimizerInput, OptimizerKind};
use super::value::{parse_epochs, CenteringValue, Crops, Flag, Num, NumList, Range, Schedule};
use super::{fields, set, skip_value, Errors, Keyed};
use crate::kw;

/// A DINO objective over a declared ViT.
///
/// Grammar:
/// ```text
/// ATTR* VIS NAME for PATH {
///     head: HEAD, crops: CROPS,
///     student_temp: NUM, teacher_temp: SCHEDULE, center_momentum: NUM,
///     teacher_momentum: SCHEDULE, optimizer: OPTIMIZER,
///     clip_grad: NUM (per (parameter | module))?, freeze_last_layer: NUM epochs zero_lr?,
///     epochs: INT, batch_size: INT, augment: AUGMENT, koleo: NUM,
///     centering: (ema | sinkhorn_knopp(INT)), ibot: IBOT
/// }
/// ```
/// `head`, `crops`, `student_temp`, `teacher_temp`, `teacher_momentum` and `optimizer` are
/// required; the rest default to DINO's code defaults (center momentum 0.9, clip 3.0,
/// freeze 1 epoch, 100 epochs, batch 64, ImageNet augmentations, no KoLeo, the EMA center,
/// no iBOT). `per module` clips each module's joint norm (DINOv2) instead of each parameter's
/// (DINO); `zero_lr` freezes the last layer by stepping it at lr 0 (DINOv2) instead of skipping
/// it (DINO).
pub struct DinoInput {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub backbone: Path,
    pub head: Option<Keyed<HeadInput>>,
    pub crops: Option<Keyed<CropsInput>>,
    pub student_temp: Option<Keyed<Num>>,
    pub teacher_temp: Option<Keyed<Schedule>>,
    pub center_momentum: Option<Keyed<Num>>,
    pub teacher_momentum: Option<Keyed<Schedule>>,
    pub optimizer: Option<Keyed<OptimizerInput>>,
    pub clip_grad: Option<Keyed<ClipInput>>,
    /// DINOv2's KoLeo regularizer's weight on the student's global [CLS] features.
    pub koleo: Option<Keyed<Num>>,
    /// How the teacher is centered: DINO's EMA center, or DINOv2's Sinkhorn-Knopp.
    pub centering: Option<Keyed<CenteringValue>>,
    /// iBOT's masked-patch loss (DINOv2).
    pub ibot: Option<Keyed<IbotInput>>,
    pub freeze_last_layer: Option<Keyed<Num>>,
    /// Where `zero_lr` was written after `freeze_last_layer`'s epochs.
    pub freeze_zero_lr: Option<proc_macro2::Span>,
    pub epochs: Option<Keyed<Num>>,
    pub batch_size: Option<Keyed<Num>>,
    pub augment: Option<Keyed<AugmentInput>>,
    pub errors: Errors,
}

impl Parse for DinoInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let name: Ident = input.parse()?;
        input.parse::<Token![for]>()?;
        let backbone: Path = input.parse()?;
        let body;
        syn::braced!(body in input);
        let mut d = DinoInput {
            attrs,
            vis,
            name,
            backbone,
            head: None,
            crops: None,
            student_temp: None,
            teacher_temp: None,
            center_momentum: None,
            teacher_momentum: None,
            optimizer: None,
            clip_grad: None,
            koleo: None,
            centering: None,
            ibot: None,
            freeze_last_layer: None,
            freeze_zero_lr: None,
            epochs: None,
            batch_size: None,
            augment: None,
            errors: Errors::default(),
        };
        fields(&body, |input| {
            let la = input.lookahead1();
            let e = &mut d.errors;
            if la.peek(kw::head) {
                key!(input, e, d.head, head)
            } else if la.peek(kw::crops) {
                key!(input, e, d.crops, crops)
            } else if la.peek(kw::student_temp) {
                key!(input, e, d.student_temp, student_temp)
            } else if la.peek(kw::teacher_temp) {
                key!(input, e, d.teacher_temp, teacher_temp)
            } else if la.peek(kw::center_momentum) {
                key!(input, e, d.center_momentum, center_momentum)
            } else if la.peek(kw::teacher_momentum) {
                key!(input, e, d.teacher_momentum, teacher_momentum)
            } else if la.peek(kw::optimizer) {
                key!(input, e, d.optimizer, optimizer)
            } else if la.peek(kw::clip_grad) {
                key!(input, e, d.clip_grad, clip_grad)
            } else if la.peek(kw::freeze_last_layer) {
                epochs_key!(input, e, d.freeze_last_layer, freeze_last_layer);
                if input.peek(kw::zero_lr) {
                    d.freeze_zero_lr = Some(input.parse::<kw::zero_lr>()?.span);
                }
            } else if la.peek(kw::epochs) {
                key!(input, e, d.epochs, epochs)
            } else if la.peek(kw::batch_size) {
                key!(input, e, d.batch_size, batch_size)
            } else if la.peek(kw::augment) {
                key!(input, e, d.augment, augment)
            } else if la.peek(kw::koleo) {
                key!(input, e, d.koleo, koleo)
            } else if la.peek(kw::centering) {
                key!(input, e, d.centering, centering)
            } else if la.peek(kw::ibot) {
                key!(input, e, d.ibot, ibot)
            } else {
                e.push(super::unknown_key(input, la.error()));
                skip_value(input)?;
            }
            Ok(())
        })?;
        Ok(d)
    }
}

/// iBOT's masked-patch loss.
///
/// Grammar: `{ weight: NUM, mask_ratio: NUM..NUM, mask_probability: NUM, separate_head: BOOL }`
/// (each optional: DINOv2's 1.0, 0.1..0.5, 0.5 and false).
pub struct IbotInput {
    pub weight: Option<Keyed<Num>>,
    pub mask_ratio: Option<Keyed<Range>>,
    pub mask_probability: Option<Keyed<Num>>,
    pub separate_head: Option<Keyed<Flag>>,
    pub errors: Errors,
}

impl Parse for IbotInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let body;
        syn::braced!(body in input);
        let mut i = IbotInput {
            weight: None,
            mask_ratio: None,
            mask_probability: None,
            separate_head: None,
            errors: Errors::default(),
        };
        fields(&body, |input| {
            let la = input.lookahead1();
            let e = &mut i.errors;
            if la.peek(kw::weight) {
                key!(input, e, i.weight, weight)
            } else if la.peek(kw::mask_ratio) {
                key!(input, e, i.mask_ratio, mask_ratio)
            } else if la.peek(kw::mask_probability) {
                key!(input, e, i.mask_probability, mask_probability)
            } else if la.peek(kw::separate_head) {
                key!(input, e, i.separate_head, separate_head)
            } else {
                e.push(super::unknown_key(input, la.error()));
                skip_value(input)?;
            }
            Ok(())
        })?;
        Ok(i)
    }
}

/// The projection head.
///
/// Grammar: `{ hidden: INT, bottleneck: INT, out: INT, layers: INT, norm_last_layer: BOOL }`
/// (`layers` defaults to 3, `norm_last_layer` to true).
pub struct HeadInput {
    pub hidden: Option<Keyed<Num>>,
    pub bottleneck: Option<Keyed<Num>>,
    pub out: Option<Keyed<Num>>,
    pub layers: Option<Keyed<Num>>,
    pub norm_last_layer: Option<Keyed<Flag>>,
    pub errors: Errors,
}

impl Parse for HeadInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let body;
        syn::braced!(body in input);
        let mut h = HeadInput {
            hidden: None,
            bottleneck: None,
            out: None,
            layers: None,
            norm_last_layer: None,
            errors: Errors::default(),
        };
        fields(&body, |input| {
            let la = input.lookahead1();
            let e = &mut h.errors;
            if la.peek(kw::hidden) {
                key!(input, e, h.hidden, hidden)
            } else if la.peek(kw::bottleneck) {
                key!(input, e, h.bottleneck, bottleneck)
            } else if la.peek(kw::out) {
                key!(input, e, h.out, out)
            } else if la.peek(kw::layers) {
                key!(input, e, h.layers, layers)
            } else if la.peek(kw::norm_last_layer) {
                key!(input, e, h.norm_last_layer, norm_last_layer)
            } else {
                e.push(super::unknown_key(input, la.error()));
                skip_value(input)?;
            }
            Ok(())
        })?;
        Ok(h)
    }
}

/// The multi-crop views.
///
/// Grammar: `{ global: CROP, local: CROP }` with `CROP = INT x INT scale NUM..NUM`
/// (`local` is optional: no local crops).
pub struct CropsInput {
    pub global: Option<Keyed<Crops>>,
    pub local: Option<Keyed<Crops>>,
    pub errors: Errors,
}

impl Parse for CropsInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let body;
        syn::braced!(body in input);
        let mut c = CropsInput { global: None, local: None, errors: Errors::default() };
        fields(&body, |input| {
            let la = input.lookahead1();
            let e = &mut c.errors;
            if la.peek(kw::global) {
                key!(input, e, c.global, global)
            } else if la.peek(kw::local) {
                key!(input, e, c.local, local)
            } else {
                e.push(super::unknown_key(input, la.error()));
                skip_value(input)?;
            }
            Ok(())
        })?;
        Ok(c)
    }
}

/// Either `off` or a value.
pub enum Switch<T> {
    Off,
    On(T),
}

impl<T: Parse> Parse for Switch<T> {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(kw::off) {
            input.parse::<kw::off>()?;
            Ok(Switch::Off)
        } else {
            Ok(Switch::On(input.parse()?))
        }
    }
}

/// Color jitter. Grammar: `[brightness, contrast, saturation, hue] p NUM`
pub struct Jitter {
    pub strengths: NumList,
    pub p: Num,
}

impl Parse for Jitter {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let strengths = input.parse()?;
        input.parse::<kw::p>()?;
        Ok(Jitter { strengths, p: input.parse()? })
    }
}

/// Gaussian blur. Grammar: `sigma NUM..NUM p [NUM, NUM, NUM] (kernel INT)?` with the
/// probabilities of global 1, global 2 and the local crops.
pub struct Blur {
    pub sigma: Range,
    pub p: NumList,
    pub kernel: Option<Num>,
}

impl Parse for Blur {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        input.parse::<kw::sigma>()?;
        let sigma = input.parse()?;
        input.parse::<kw::p>()?;
        let p = input.parse()?;
        let kernel = if input.peek(kw::kernel) {
            input.parse::<kw::kernel>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(Blur { sigma, p, kernel })
    }
}

/// Solarization of global view 2. Grammar: `threshold NUM p NUM` (threshold in [0, 1]).
pub struct Solarize {
    pub threshold: Num,
    pub p: Num,
}

impl Parse for Solarize {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        input.parse::<kw::threshold>()?;
        let threshold = input.parse()?;
        input.parse::<kw::p>()?;
        Ok(Solarize { threshold, p: input.parse()? })
    }
}

/// Normalization. Grammar: `mean [NUM, ...] std [NUM, ...]` (one value per channel).
pub struct Normalize {
    pub mean: NumList,
    pub std: NumList,
}

impl Parse for Normalize {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        input.parse::<kw::mean>()?;
        let mean = input.parse()?;
        input.parse::<kw::std>()?;
        Ok(Normalize { mean, std: input.parse()? })
    }
}

/// The augmentations of the multi-crop views.
///
/// Grammar: `{ flip: NUM, color_jitter: JITTER | off, grayscale: NUM | off,
/// blur: BLUR | off, solarize: SOLARIZE | off, normalize: NORMALIZE }`, every key optional
/// (defaults: DINO's ImageNet pipeline).
pub struct AugmentInput {
    pub flip: Option<Keyed<Num>>,
    pub color_jitter: Option<Keyed<Switch<Jitter>>>,
    pub grayscale: Option<Keyed<Switch<Num>>>,
    pub blur: Option<Keyed<Switch<Blur>>>,
    pub solarize: Option<Keyed<Switch<Solarize>>>,
    pub normalize: Option<Keyed<Normalize>>,
    pub errors: Errors,
}

impl Parse for AugmentInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let body;
        syn::braced!(body in input);
        let mut a = AugmentInput {
            flip: None,
            color_jitter: None,
            grayscale: None,
            blur: None,
            solarize: None,
            normalize: None,
            errors: Errors::default(),
        };
        fields(&body, |input| {
            let la = input.lookahead1();
            let e = &mut a.errors;
            if la.peek(kw::flip) {
                key!(input, e, a.flip, flip)
            } else if la.peek(kw::color_jitter) {
                key!(input, e, a.color_jitter, color_jitter)
            } else if la.peek(kw::grayscale) {
                key!(input, e, a.grayscale, grayscale)
            } else if la.peek(kw::blur) {
                key!(input, e, a.blur, blur)
            } else if la.peek(kw::solarize) {
                key!(input, e, a.solarize, solarize)
            } else if la.peek(kw::normalize) {
                key!(input, e, a.normalize, normalize)
            } else {
                e.push(super::unknown_key(input, la.error()));
                skip_value(input)?;
            }
            Ok(())
        })?;
        Ok(a)
    }
}
