//! The `vit!` form.
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Ident, Token, Visibility};

use super::value::{Flag, InterpolationValue, MlpValue, Num};
use super::{fields, set, skip_value, Errors, Keyed};
use crate::kw;

/// A ViT declaration.
///
/// Grammar:
/// ```text
/// ATTR* VIS NAME {
///     image: INT, patch: INT, channels: INT, dim: INT, depth: INT, heads: INT,
///     (mlp_ratio: NUM | mlp: INT), mlp: (gelu | swiglu), qkv_bias: BOOL, norm_eps: NUM,
///     drop_path: NUM, layer_scale: NUM, registers: INT, interpolation: (bicubic | antialiased)
/// }
/// ```
/// Keys in any order; `qkv_bias` (default true), `norm_eps` (1e-6), `drop_path` (0) and
/// `layer_scale` (none) and `registers` (0) are optional, as is the MLP width (default `mlp_ratio: 4`)
/// and kind (`gelu`; `mlp: swiglu` takes its width from `mlp_ratio`), and `interpolation`
/// (`bicubic`, DINO's).
pub struct VitInput {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub image: Option<Keyed<Num>>,
    pub patch: Option<Keyed<Num>>,
    pub channels: Option<Keyed<Num>>,
    pub dim: Option<Keyed<Num>>,
    pub depth: Option<Keyed<Num>>,
    pub heads: Option<Keyed<Num>>,
    pub mlp_ratio: Option<Keyed<Num>>,
    pub mlp: Option<Keyed<MlpValue>>,
    pub qkv_bias: Option<Keyed<Flag>>,
    pub norm_eps: Option<Keyed<Num>>,
    pub drop_path: Option<Keyed<Num>>,
    pub layer_scale: Option<Keyed<Num>>,
    pub registers: Option<Keyed<Num>>,
    pub interpolation: Option<Keyed<InterpolationValue>>,
    /// Unknown and duplicate keys.
    pub errors: Errors,
}

impl Parse for VitInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let name: Ident = input.parse()?;
        let body;
        syn::braced!(body in input);
        let mut v = VitInput {
            attrs,
            vis,
            name,
            image: None,
            patch: None,
            channels: None,
            dim: None,
            depth: None,
            heads: None,
            mlp_ratio: None,
            mlp: None,
            qkv_bias: None,
            norm_eps: None,
            drop_path: None,
            layer_scale: None,
            registers: None,
            interpolation: None,
            errors: Errors::default(),
        };
        fields(&body, |input| {
            let la = input.lookahead1();
            macro_rules! num_key {
                ($kw:ident, $field:ident) => {{
                    let k = input.parse::<kw::$kw>()?;
                    input.parse::<Token![:]>()?;
                    let value = input.parse()?;
                    set(&mut v.$field, k.span, stringify!($kw), value, &mut v.errors);
                }};
            }
            if la.peek(kw::image) {
                num_key!(image, image)
            } else if la.peek(kw::patch) {
                num_key!(patch, patch)
            } else if la.peek(kw::channels) {
                num_key!(channels, channels)
            } else if la.peek(kw::dim) {
                num_key!(dim, dim)
            } else if la.peek(kw::depth) {
                num_key!(depth, depth)
            } else if la.peek(kw::heads) {
                num_key!(heads, heads)
            } else if la.peek(kw::mlp_ratio) {
                num_key!(mlp_ratio, mlp_ratio)
            } else if la.peek(kw::mlp) {
                num_key!(mlp, mlp)
            } else if la.peek(kw::qkv_bias) {
                num_key!(qkv_bias, qkv_bias)
            } else if la.peek(kw::norm_eps) {
                num_key!(norm_eps, norm_eps)
            } else if la.peek(kw::drop_path) {
                num_key!(drop_path, drop_path)
            } else if la.peek(kw::layer_scale) {
                num_key!(layer_scale, layer_scale)
            } else if la.peek(kw::registers) {
                num_key!(registers, registers)
            } else if la.peek(kw::interpolation) {
                num_key!(interpolation, interpolation)
            } else {
                v.errors.push(super::unknown_key(input, la.error()));
                skip_value(input)?;
            }
            Ok(())
        })?;
        Ok(v)
    }
}
