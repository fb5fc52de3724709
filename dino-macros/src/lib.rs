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
    fn vit_small_14_reg4() {
        let out = crate::expand::vit(quote! {
            /// DINOv2's ViT-S/14 with 4 registers and LayerScale, at its 518 px.
            pub VitSmall14Reg4 { image: 518, patch: 14, dim: 384, depth: 12, heads: 6, layer_scale: 1e-5, registers: 4 }
        });
        insta::assert_snapshot!(pretty(out));
    }

    #[test]
    fn vit_giant_14_swiglu() {
        // DINOv2's ViT-g/14: SwiGLU of 4096 hidden channels (2/3 of 4 x 1536), `w12` 8192 wide
        let out = crate::expand::vit(quote! {
            /// DINOv2's ViT-g/14 (SwiGLU, LayerScale) at its 518 px.
            pub VitGiant14 { image: 518, patch: 14, dim: 1536, depth: 40, heads: 24, mlp: swiglu, layer_scale: 1e-5 }
        });
        let text = pretty(out);
        assert!(text.contains("mlp: 4096") && text.contains("Ffn::SwiGlu"), "{text}");
        insta::assert_snapshot!(text);
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
    fn dinov2_style_objective() {
        // DINOv2's recipe: Sinkhorn-Knopp centering (3 iterations), KoLeo 0.1, iBOT with its
        // own head, DINOv2's optimizer path (square-root lr scaling, layer-wise decay, the
        // patch-embedding multiplier, per-module clipping, the lr-0 freeze)
        let out = crate::expand::dino(quote! {
            /// DINOv2's objective on ViT-S/14 with 4 registers.
            pub Dinov2VitS14 for VitSmall14Reg4 {
                head: { hidden: 2048, bottleneck: 384, out: 65536, layers: 3, norm_last_layer: true },
                crops: { global: 2 x 224 scale 0.32..1.0, local: 8 x 98 scale 0.05..0.32 },
                student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 30 epochs,
                teacher_momentum: 0.992 -> 1.0 cosine, centering: sinkhorn_knopp(3), koleo: 0.1,
                optimizer: adamw {
                    lr: 4e-3 per 1024 sqrt, warmup: 10 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.2,
                    layer_decay: 0.9, patch_embed_lr: 0.2,
                },
                clip_grad: 3.0 per module, freeze_last_layer: 1 epochs zero_lr,
                ibot: { weight: 1.0, mask_ratio: 0.1..0.5, mask_probability: 0.5, separate_head: true },
            }
        });
        let text = pretty(out);
        for want in
            ["LrScaling::Sqrt", "layer_decay: 0.9", "patch_embed_lr: 0.2", "ClipScope::Module", "FreezeRule::ZeroLr"]
        {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert!(text.contains("Centering::SinkhornKnopp {\n            iterations: 3,"), "{text}");
        assert!(text.contains("separate_head: true"), "{text}");
        insta::assert_snapshot!(text);
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

#[cfg(test)]
mod fuzz {
    //! The parser and the validator take any tokens without panicking: random edits of the
    //! canonical declarations (characters dropped, replaced, inserted, tokens duplicated) give
    //! an expansion or a compile error, never a panic. Cases: `PROPTEST_CASES` (CI: 256).
    use proptest::prelude::*;

    const VIT: &str =
        "/// doc\npub V { image: 224, patch: 16, channels: 3, dim: 384, depth: 12, heads: 6, mlp_ratio: 4, \
                       qkv_bias: true, norm_eps: 1e-6, drop_path: 0.1, layer_scale: 1e-5, registers: 4, mlp: swiglu }";
    const DINO: &str = "pub D for V { head: { hidden: 2048, bottleneck: 256, out: 65536, layers: 3, \
                        norm_last_layer: true }, crops: { global: 2 x 224 scale 0.4..1.0, local: 10 x 96 scale \
                        0.05..0.4 }, student_temp: 0.1, teacher_temp: 0.04 -> 0.07 warmup 30 epochs, \
                        center_momentum: 0.9, teacher_momentum: 0.996 -> 1.0 cosine, optimizer: adamw { lr: 5e-4 \
                        per 256, warmup: 10 epochs, min_lr: 1e-6, weight_decay: 0.04 -> 0.4 }, clip_grad: 3.0, \
                        freeze_last_layer: 1 epochs, epochs: 100, batch_size: 64, augment: { flip: 0.5, \
                        color_jitter: [0.4, 0.4, 0.0, 0.0] p 0.8, grayscale: off, blur: sigma 0.1..1.0 p [1.0, \
                        0.1, 0.5] kernel 3, solarize: threshold 0.5 p 0.2, normalize: mean [0.2860] std \
                        [0.3530] }, koleo: 0.1, centering: ema }";

    /// Pieces a mutation may insert: the DSL's own punctuation and words, and foreign ones.
    const PIECES: &[&str] = &[
        ",",
        ":",
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        "..",
        "->",
        "x",
        "p",
        "epochs",
        "-",
        "*",
        "0",
        "1e400",
        "18446744073709551616",
        "-1",
        "0.0",
        "\"s\"",
        "true",
        "per",
        "warmup",
        "cosine",
        "linear",
        "head",
        "crops",
        "global",
        "local",
        "'a",
        "swiglu",
        "gelu",
        "koleo",
        "antialiased",
        "centering",
        "sinkhorn_knopp",
        "ema",
        "ibot",
        "mask_ratio",
        "separate_head",
    ];

    #[derive(Debug, Clone)]
    enum Edit {
        Drop(usize, usize),
        Insert(usize, usize),
        Replace(usize, usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<usize>(), 1..8usize).prop_map(|(a, n)| Edit::Drop(a, n)),
            (any::<usize>(), 0..PIECES.len()).prop_map(|(a, p)| Edit::Insert(a, p)),
            (any::<usize>(), 0..PIECES.len()).prop_map(|(a, p)| Edit::Replace(a, p)),
        ]
    }

    fn apply(src: &str, edits: &[Edit]) -> String {
        let mut s: Vec<char> = src.chars().collect();
        for e in edits {
            let at = |a: usize, len: usize| if len == 0 { 0 } else { a % len };
            match *e {
                Edit::Drop(a, n) => {
                    let i = at(a, s.len());
                    s.drain(i..(i + n).min(s.len()));
                }
                Edit::Insert(a, p) => {
                    let i = at(a, s.len() + 1);
                    s.splice(i..i, format!(" {} ", PIECES[p]).chars());
                }
                Edit::Replace(a, p) => {
                    let i = at(a, s.len());
                    let end = (i + 1..s.len()).find(|&j| !s[j].is_alphanumeric() && s[j] != '.').unwrap_or(s.len());
                    s.splice(i..end, PIECES[p].chars());
                }
            }
        }
        s.into_iter().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn vit_declarations_never_panic(edits in proptest::collection::vec(edit(), 1..6)) {
            if let Ok(ts) = syn::parse_str::<proc_macro2::TokenStream>(&apply(VIT, &edits)) {
                let _ = super::expand::vit(ts);
            }
        }

        #[test]
        fn dino_declarations_never_panic(edits in proptest::collection::vec(edit(), 1..6)) {
            if let Ok(ts) = syn::parse_str::<proc_macro2::TokenStream>(&apply(DINO, &edits)) {
                let _ = super::expand::dino(ts);
            }
        }
    }

    /// Sizes near `u64::MAX` get their errors at once: the divisor hints once enumerated every
    /// number up to the image size (a proptest run found the hang).
    #[test]
    fn absurd_sizes_get_an_error_not_a_hang() {
        let t = std::time::Instant::now();
        let decl = "pub V { image: 18446744073709551557, patch: 16, dim: 18446744073709551557, heads: 7, depth: 1 }";
        let out = super::expand::vit(syn::parse_str(decl).unwrap()).to_string();
        assert!(out.contains("must divide `image") && out.contains("must divide `dim"), "{out}");
        assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    }

    #[test]
    fn the_seeds_expand_cleanly() {
        let v = super::expand::vit(syn::parse_str(VIT).unwrap()).to_string();
        let d = super::expand::dino(syn::parse_str(DINO).unwrap()).to_string();
        assert!(!v.contains("compile_error") && !d.contains("compile_error"), "{v}\n{d}");
    }
}
