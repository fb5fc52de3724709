//! Parsing: one `Parse` impl per form, each documenting the grammar it accepts. Syntax errors
//! stop parsing; unknown and duplicate keys are collected so the user sees them all at once.
pub mod dino;
pub mod value;
pub mod vit;

use proc_macro2::Span;
use syn::parse::ParseStream;
use syn::{Attribute, Token};

/// A key's value with the key's span.
#[derive(Debug, Clone)]
pub struct Keyed<T> {
    pub key: Span,
    pub value: T,
}

/// Errors found while parsing that do not stop it (unknown or duplicate keys).
#[derive(Default)]
pub struct Errors(pub Vec<syn::Error>);

impl Errors {
    pub fn push(&mut self, e: syn::Error) {
        self.0.push(e);
    }
}

/// Store a key's value, or report it as given twice.
pub fn set<T>(slot: &mut Option<Keyed<T>>, key: Span, name: &str, value: T, errors: &mut Errors) {
    if slot.is_some() {
        errors.push(syn::Error::new(key, format!("`{name}` is given twice; keep one")));
    } else {
        *slot = Some(Keyed { key, value });
    }
}

/// Skip the tokens of a value up to the next top-level comma (after an unknown key).
pub fn skip_value(input: ParseStream) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}

/// Parse `key: value` pairs separated by commas until the stream ends; `field` parses one
/// pair (it sees the key first).
pub fn fields(input: ParseStream, mut field: impl FnMut(ParseStream) -> syn::Result<()>) -> syn::Result<()> {
    while !input.is_empty() {
        field(input)?;
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(())
}

/// The `///` doc comments of a declaration, as one string.
pub fn doc_string(attrs: &[Attribute]) -> String {
    let mut lines = vec![];
    for a in attrs {
        if a.path().is_ident("doc") {
            if let syn::Meta::NameValue(nv) = &a.meta {
                if let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value {
                    lines.push(s.value().trim().to_string());
                }
            }
        }
    }
    lines.join("\n")
}

/// The span of a whole declaration's name, for errors about missing keys.
pub fn missing(name: &syn::Ident, form: &str, key: &str, example: &str) -> syn::Error {
    syn::Error::new(name.span(), format!("`{name}` is missing `{key}` (add `{key}: {example}` to the {form})"))
}
