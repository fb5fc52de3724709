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
