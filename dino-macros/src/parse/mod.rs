//! Parsing: one `Parse` impl per form, each documenting the grammar it accepts. Syntax errors
//! stop parsing; unknown and duplicate keys are collected so the user sees them all at once.
/// Parse one `kw: value` pair into `slot` (value parsed by `T::parse`).
macro_rules! key {
    ($input:ident, $errors:expr, $slot:expr, $kw:ident) => {{
        let k = $input.parse::<kw::$kw>()?;
        $input.parse::<Token![:]>()?;
        let value = $input.parse()?;
        set(&mut $slot, k.span, stringify!($kw), value, $errors);
    }};
}

/// Parse one `kw: NUM (epochs|epoch)` pair.
macro_rules! epochs_key {
    ($input:ident, $errors:expr, $slot:expr, $kw:ident) => {{
        let k = $input.parse::<kw::$kw>()?;
        $input.parse::<Token![:]>()?;
        let value: Num = $input.parse()?;
        parse_epochs($input)?;
        set(&mut $slot, k.span, stringify!($kw), value, $errors);
    }};
}

pub mod dino;
pub mod optimizer;
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

/// The error for a key none of `expected` matches (the lookahead's error lists them): with the
/// nearest known key when the word looks like a misspelling of one.
pub fn unknown_key(input: ParseStream, expected: syn::Error) -> syn::Error {
    let Ok(word) = input.fork().parse::<syn::Ident>() else { return expected };
    let msg = expected.to_string();
    let keys: Vec<&str> = msg.split('`').skip(1).step_by(2).collect();
    let w = word.to_string();
    // a near spelling, or a longer or shorter form of the key (`student_temperature`)
    let prefix = |k: &str| w.len().min(k.len()) >= 4 && (w.starts_with(k) || k.starts_with(w.as_str()));
    let near = keys
        .iter()
        .map(|k| (if prefix(k) { 0 } else { edit_distance(&w, k) }, *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1) + usize::from(k.len() > 8))
        .min();
    let list = msg.strip_prefix("expected ").unwrap_or(&msg);
    let text = match near {
        Some((_, k)) => format!("unknown key `{w}`: did you mean `{k}`? (expected {list})"),
        None => format!("unknown key `{w}` (expected {list})"),
    };
    syn::Error::new(word.span(), text)
}

/// Levenshtein distance (insertions, deletions, substitutions; a swap of neighbours counts 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for j in 0..=b.len() {
        d[0][j] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
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
        if !input.peek(Token![,]) {
            return Err(after_value(input));
        }
        input.parse::<Token![,]>()?;
    }
    Ok(())
}

/// What follows a value where a `,` was expected: an operator means an expression, which the
/// DSL does not evaluate.
fn after_value(input: ParseStream) -> syn::Error {
    match input.fork().parse::<proc_macro2::Punct>().map(|p| p.as_char()) {
        Ok(op @ ('*' | '/' | '+' | '-' | '%' | '<' | '>' | '^' | '&' | '|')) => syn::Error::new(
            input.span(),
            format!(
                "values are literals: the DSL does not evaluate expressions such as `a {op} b`; write the number \
                 itself (e.g. `384`, not `6 * 64`), then `,`"
            ),
        ),
        _ => syn::Error::new(input.span(), "expected `,` after the value (keys are separated by commas)"),
    }
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
