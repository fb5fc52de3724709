//! The items a `vit!` declaration expands to.
use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::{float, int};
use crate::ir::VitIr;

pub fn expand(ir: &VitIr, rt: &TokenStream) -> TokenStream {
    let VitIr { attrs, vis, name, doc, .. } = ir;
    let (c, p, d, h, dh, qkv, f, g) = (
        int(ir.channels),
        int(ir.patch),
        int(ir.dim),
        int(ir.heads),
        int(ir.head_dim()),
        int(ir.dim.saturating_mul(3)),
        int(ir.mlp_packed()),
        int(ir.mlp),
    );
    let interpolation = if ir.antialiased {
        quote!(#rt::config::Interpolation::Antialiased)
    } else {
        quote!(#rt::config::Interpolation::Bicubic)
    };
    let ffn = if ir.swiglu { quote!(#rt::config::Ffn::SwiGlu) } else { quote!(#rt::config::Ffn::Gelu) };
    let (cpp, n0, img, np) = (
        int(ir.channels.saturating_mul(ir.patch).saturating_mul(ir.patch)),
        int(ir.positions()),
        int(ir.image),
        int(ir.grid().saturating_mul(ir.grid())),
    );
    // tokens the blocks see at the native size: [CLS], registers, patches
    let (nt0, registers) = (int(ir.tokens()), int(ir.registers));
    let (depth, heads_n, mlp_n) = (int(ir.depth), int(ir.heads), int(ir.mlp));
    let (qkv_bias, eps32) = (ir.qkv_bias, Literal::f32_unsuffixed(ir.norm_eps as f32));
    let (eps, drop_path) = (float(ir.norm_eps), float(ir.drop_path));
    let name_str = name.to_string();
    let (layer_scale, ls32) = match ir.layer_scale {
        Some(g) => {
            let (g64, g32) = (float(g), Literal::f32_unsuffixed(g as f32));
            (quote!(::core::option::Option::Some(#g64)), quote!(::core::option::Option::Some(#g32)))
        }
        None => (quote!(::core::option::Option::None), quote!(::core::option::Option::None)),
    };
    let vit = quote!(#rt::nn::VisionTransformer<#c, #p, #d, #h, #dh, #qkv, #f, #g, #cpp, #n0>);
    let p_ = quote!(#rt::__private);
    quote! {
        #(#attrs)*
        #vis struct #name(pub #vit);

        impl #name {
            /// The declaration, as data.
            pub const CONFIG: #rt::config::VitConfig = #rt::config::VitConfig {
                name: #name_str,
                doc: #doc,
                image: #img,
                patch: #p,
                channels: #c,
                dim: #d,
                depth: #depth,
                heads: #heads_n,
                mlp: #mlp_n,
                ffn: #ffn,
                interpolation: #interpolation,
                qkv_bias: #qkv_bias,
                norm_eps: #eps,
                drop_path: #drop_path,
                layer_scale: #layer_scale,
                registers: #registers,
            };

            /// Create the parameter nodes in `cx` (named as in DINO's state_dict).
            pub fn new(cx: &mut #p_::Graph) -> Self {
                Self::new_with_eps(cx, #eps32)
            }

            /// Create the parameter nodes with another LayerNorm epsilon (weights trained with
            /// a different one, e.g. Hugging Face's 1e-12).
            pub fn new_with_eps(cx: &mut #p_::Graph, eps: ::core::primitive::f32) -> Self {
                let blocks = #rt::nn::BlockOptions { qkv_bias: #qkv_bias, eps, layer_scale: #ls32, ffn: #ffn };
                Self(#rt::nn::VisionTransformer::with_options(cx, #depth, blocks, #registers).with_interpolation(#interpolation))
            }

            /// The normalized [CLS] token of images at the native size.
            pub fn forward<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, #p_::Const<#c>, #p_::Const<#img>, #p_::Const<#img>)>,
            ) -> #p_::GraphTensor<(B, #p_::Const<#d>)> {
                self.0.forward::<B, #img, #img, #np, #nt0>(x)
            }

            /// All tokens after the final norm, at the native size.
            pub fn forward_features<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, #p_::Const<#c>, #p_::Const<#img>, #p_::Const<#img>)>,
            ) -> #p_::GraphTensor<(B, #p_::Const<#nt0>, #p_::Const<#d>)> {
                self.0.forward_features::<B, #img, #img, #np, #nt0>(x)
            }

            /// The last block's attention weights at the native size.
            pub fn last_self_attention<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, #p_::Const<#c>, #p_::Const<#img>, #p_::Const<#img>)>,
            ) -> #p_::GraphTensor<(B, #p_::Const<#h>, #p_::Const<#nt0>, #p_::Const<#nt0>)> {
                self.0.last_self_attention::<B, #img, #img, #np, #nt0>(x)
            }
        }

        impl #rt::nn::Parameters for #name {
            fn visit(&self, v: &mut #rt::nn::ParamVisitor) {
                #rt::nn::Parameters::visit(&self.0, v)
            }
        }

        impl #rt::model::VitModel for #name {
            const CONFIG: #rt::config::VitConfig = #name::CONFIG;
            type Vit = #vit;
            fn new(cx: &mut #p_::Graph) -> Self {
                #name::new(cx)
            }
            fn new_with_eps(cx: &mut #p_::Graph, eps: ::core::primitive::f32) -> Self {
                #name::new_with_eps(cx, eps)
            }
            fn vit(&self) -> &Self::Vit {
                &self.0
            }
        }
    }
}
