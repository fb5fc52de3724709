//! The `vit!` and `dino!` declaration macros.
//!
//! Each macro parses its form, validates every rule (reporting all mistakes at once, each on
//! the offending token), lowers to plain data (`ir`) and generates the items from it. On an
//! error the items are still generated from corrected values, so the user sees the real
//! mistakes and no cascade.
mod codegen;
mod ir;
mod kw;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Declare a Vision Transformer backbone. See the `dino` crate documentation for the grammar.
#[proc_macro]
pub fn vit(input: TokenStream) -> TokenStream {
    expand::vit(input.into()).into()
}

/// Declare a DINO objective over a `vit!` backbone. See the `dino` crate documentation.
#[proc_macro]
pub fn dino(input: TokenStream) -> TokenStream {
    expand::dino(input.into()).into()
}

mod expand {
    //! proc_macro2 entry points (unit-testable).
    use proc_macro2::TokenStream;
    use quote::quote;

    use crate::{codegen, parse, validate};

    pub fn vit(input: TokenStream) -> TokenStream {
        let parsed: parse::vit::VitInput = match syn::parse2(input) {
            Ok(p) => p,
            Err(e) => return e.into_compile_error(),
        };
        let (ir, cx) = validate::vit(parsed);
        let items = codegen::vit::expand(&ir, &codegen::runtime());
        let errors = cx.finish().map(|e| e.into_compile_error());
        quote!(#errors #items)
    }

    pub fn dino(input: TokenStream) -> TokenStream {
        let parsed: parse::dino::DinoInput = match syn::parse2(input) {
            Ok(p) => p,
            Err(e) => return e.into_compile_error(),
        };
        let (ir, cx) = validate::dino(parsed);
        let items = codegen::dino::expand(&ir, &codegen::runtime());
        let errors = cx.finish().map(|e| e.into_compile_error());
        quote!(#errors #items)
    }
}

#[cfg(test)]
mod tests {
    //! Expansion snapshots of the canonical declarations: review changes with
    //! `cargo insta review` (or `INSTA_UPDATE=always`).
    use quote::quote;

    fn pretty(tokens: proc_macro2::TokenStream) -> String {
        prettyplease::unparse(&syn::parse2(tokens).expect("expansion parses as a file"))
    }

    #[test]
    fn vit_small_16() {
        let out = crate::expand::vit(quote! {
            /// ViT-S/16 (DINO Table 1).
            pub VitSmall16 { image: 224, patch: 16, channels: 3, dim: 384, depth: 12, heads: 6,
                             mlp_ratio: 4, qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1 }
        });
        insta::assert_snapshot!(pretty(out));
    }

    #[test]
    fn dino_vit_s16() {
        let out = crate::expand::dino(quote! {
            /// DINO ViT-S/16 with 2x224 + 10x96 crops.
            pub DinoVitS16 for VitSmall16 {
                head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, norm_last_layer: true },
                crops: { global: 2 x 224 scale 0.4..1.0, local: 10 x 96 scale 0.05..0.4 },
                student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 30 epochs,
                center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine,
                optimizer: adamw { lr: 5e-4 per 256, warmup: 10 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 },
                clip_grad: 3.0, freeze_last_layer: 1 epochs,
            }
        });
        insta::assert_snapshot!(pretty(out));
    }

    #[test]
    fn errors_come_with_the_items() {
        // an invalid declaration still expands to its items (no cascade of errors)
        let out = crate::expand::vit(quote! { pub V { image: 224, patch: 15, dim: 384, depth: 12, heads: 5 } });
        let text = out.to_string();
        assert!(text.contains("compile_error"), "{text}");
        assert!(text.contains("pub struct V"), "{text}");
    }
}
