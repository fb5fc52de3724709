//! Code generation: reads only the IR. Generated code names the runtime by an absolute path
//! and calls its hand-written types and functions; it never inlines math.
pub mod dino;
pub mod vit;

use proc_macro2::{Literal, TokenStream};
use quote::quote;

/// The path of the runtime crate as the calling crate sees it: `::dino_runtime` when it
/// depends on `dino-runtime`, `::dino::runtime` when it depends on the `dino` facade.
pub fn runtime() -> TokenStream {
    use proc_macro_crate::{crate_name, FoundCrate};
    match crate_name("dino-runtime") {
        Ok(FoundCrate::Itself) => quote!(crate),
        Ok(FoundCrate::Name(n)) => {
            let id = syn::Ident::new(&n, proc_macro2::Span::call_site());
            quote!(::#id)
        }
        Err(_) => match crate_name("dino") {
            Ok(FoundCrate::Name(n)) => {
                let id = syn::Ident::new(&n, proc_macro2::Span::call_site());
                quote!(::#id::runtime)
            }
            Ok(FoundCrate::Itself) => quote!(crate::runtime),
            Err(_) => quote!(::dino_runtime),
        },
    }
}

/// An unsuffixed integer literal.
pub fn int(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

/// An f64 literal.
pub fn float(x: f64) -> Literal {
    // the parser refuses non-finite numbers; a placeholder keeps codegen total
    Literal::f64_suffixed(if x.is_finite() { x } else { 0.0 })
}
