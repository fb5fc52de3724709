//! The items a `dino!` declaration expands to.
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use super::{float, int};
use crate::ir::{CropIr, DinoIr, OptKind};

fn opt_pair(x: Option<(f64, f64)>) -> TokenStream {
    match x {
        Some((a, b)) => {
            let (a, b) = (float(a), float(b));
            quote!(::core::option::Option::Some((#a, #b)))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn crop_config(c: &CropIr, rt: &TokenStream) -> TokenStream {
    let (n, s, lo, hi) = (int(c.count), int(c.size), float(c.scale.0), float(c.scale.1));
    quote!(#rt::config::CropConfig { count: #n, size: #s, scale: (#lo, #hi) })
}

pub fn expand(ir: &DinoIr, rt: &TokenStream) -> TokenStream {
    let DinoIr { attrs, vis, name, doc, backbone: bb, .. } = ir;
    let p_ = quote!(#rt::__private);
    // every use of the backbone goes through `VitModel`, spanned on the backbone's name, so a
    // type that is not a declared ViT gives one error there
    let bb_span = syn::spanned::Spanned::span(bb);
    let vm = quote_spanned!(bb_span=> #rt::model::VitModel);
    let bbv = quote_spanned!(bb_span=> <#bb as #vm>);
    let (hid, bot, out, layers, nll) =
        (int(ir.head.hidden), int(ir.head.bottleneck), int(ir.head.out), int(ir.head.layers), ir.head.norm_last_layer);
    let dim = quote_spanned!(bb_span=> { #bbv::DIM });
    let ch = quote_spanned!(bb_span=> { #bbv::CHANNELS });
    let name_str = name.to_string();

    // crop sizes must be whole grids of the backbone's patches: checked where the size is written
    let mut checks = vec![];
    let mut forwards = vec![];
    let groups = std::iter::once(("global", &ir.global)).chain(ir.local.as_ref().map(|l| ("local", l)));
    for (which, c) in groups {
        let size = int(c.size);
        // the patch size is the backbone's (another macro's constant): every patch size up to
        // 64 that does not divide the crop gets its own message, naming it and sizes that work
        let (ps, msgs): (Vec<_>, Vec<_>) = (2..=64usize)
            .filter(|p| c.size % p != 0)
            .map(|p| {
                let lo = c.size / p * p;
                let works = if lo == 0 { format!("{p}") } else { format!("{lo} or {}", lo.saturating_add(p)) };
                let m = format!(
                    "{which} crops of {} px are not a whole number of the backbone's {p} px patches: {works} px would be",
                    c.size
                );
                (int(p), m)
            })
            .unzip();
        let generic = format!("{which} crops of {} px are not a whole number of the backbone's patches", c.size);
        checks.push(quote_spanned! {c.size_span=>
            const _: () = match #bbv::PATCH {
                #( #ps => ::core::panic!(#msgs), )*
                p => ::core::assert!(#size % p == 0, #generic),
            };
        });
        let np = quote_spanned!(bb_span=> { (#size / #bbv::PATCH) * (#size / #bbv::PATCH) });
        let nt = quote_spanned!(bb_span=> { (#size / #bbv::PATCH) * (#size / #bbv::PATCH) + 1 + #bbv::REGISTERS });
        let backbone_fn = quote::format_ident!("backbone_{which}");
        let forward_fn = quote::format_ident!("forward_{which}");
        let doc_b = format!(" The backbone's [CLS] features of {which} crops ({} px).", c.size);
        let doc_f = format!(" The head's outputs (logits over the {} prototypes) for {which} crops.", ir.head.out);
        let drop_fn = quote::format_ident!("backbone_{which}_drop");
        let doc_d = format!(" [`{backbone_fn}`](Self::{backbone_fn}) with stochastic depth (per-block branch masks).");
        // `self`, `x` and `drop` keep the call site's hygiene (a declaration written by a
        // user's `macro_rules!` must see its own method's bindings); only the call's path and
        // turbofish carry the backbone's span, so a wrong backbone is one error on its name.
        let (me, xs, masks) = (quote!(self), quote!(x), quote!(drop));
        let call = quote_spanned!(bb_span=>
            #bbv::vit(&#me.backbone).forward_drop::<B, #size, #size, #np, #nt>(#xs, #masks));
        forwards.push(quote! {
            #[doc = #doc_b]
            pub fn #backbone_fn<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, #p_::Const<#ch>, #p_::Const<#size>, #p_::Const<#size>)>,
            ) -> #p_::GraphTensor<(B, #p_::Const<#dim>)> {
                self.#drop_fn(x, &[])
            }

            #[doc = #doc_d]
            pub fn #drop_fn<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, #p_::Const<#ch>, #p_::Const<#size>, #p_::Const<#size>)>,
                drop: &[#rt::nn::BranchMasks<B>],
            ) -> #p_::GraphTensor<(B, #p_::Const<#dim>)> {
                #call
            }

            #[doc = #doc_f]
            pub fn #forward_fn<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, #p_::Const<#ch>, #p_::Const<#size>, #p_::Const<#size>)>,
            ) -> #p_::GraphTensor<(B, #p_::Const<#out>)> {
                #p_::Module::forward(&self.head, self.#backbone_fn(x))
            }
        });
    }
    let gsize = int(ir.global.size);
    let gnp = quote_spanned!(bb_span=> { (#gsize / #bbv::PATCH) * (#gsize / #bbv::PATCH) });
    let gnt = quote_spanned!(bb_span=> { (#gsize / #bbv::PATCH) * (#gsize / #bbv::PATCH) + 1 + #bbv::REGISTERS });
    let (me, xs, masks, pm) = (quote!(self), quote!(x), quote!(drop), quote!(mask));
    let tokens_call = quote_spanned!(bb_span=>
        #bbv::vit(&#me.backbone).forward_tokens_drop::<B, #gsize, #gsize, #gnp, #gnt>(#xs, #pm, #masks));
    let has_ibot = ir.ibot.is_some();
    let separate = ir.ibot.as_ref().is_some_and(|i| i.separate_head);
    let new_mask_token = if has_ibot {
        quote!(::core::option::Option::Some(cx.named_tensor("mask_token")))
    } else {
        quote!(::core::option::Option::None)
    };
    let new_ibot_head = if separate {
        quote!(::core::option::Option::Some(#rt::nn::DinoHead::new(cx, #layers, #nll)))
    } else {
        quote!(::core::option::Option::None)
    };
    let ibot = match &ir.ibot {
        Some(i) => {
            let (w, lo, hi, p) =
                (float(i.weight), float(i.mask_ratio.0), float(i.mask_ratio.1), float(i.mask_probability));
            let sep = i.separate_head;
            quote!(::core::option::Option::Some(#rt::config::IbotConfig {
                weight: #w, mask_ratio: (#lo, #hi), mask_probability: #p, separate_head: #sep
            }))
        }
        None => quote!(::core::option::Option::None),
    };
    // iBOT's block masks need a rectangle of 4 patches strictly inside the global crop's grid
    if let Some(i) = &ir.ibot {
        let msg = format!(
            "iBOT masks blocks of at least 4 patches strictly inside the patch grid of the global crops ({} px): \
             the grid must be at least 3 x 3 patches",
            ir.global.size
        );
        checks.push(quote_spanned! {i.span=>
            const _: () = ::core::assert!(#gsize / #bbv::PATCH >= 3, #msg);
        });
    }
    let lsize = int(ir.local.as_ref().map(|l| l.size).unwrap_or(1));
    let (local_call, local_drop_call) = match ir.local {
        Some(_) => (quote!(self.backbone_local(x)), quote!(self.backbone_local_drop(x, drop))),
        None => {
            let none = quote!({
                let _ = x;
                ::core::unreachable!("this objective has no local crops")
            });
            (
                none.clone(),
                quote!({
                    let _ = drop;
                    #none
                }),
            )
        }
    };
    let a = &ir.augment;
    let n_channels = int(a.mean.len());
    let (span, msg) = match a.normalize_span {
        Some(s) => (s, format!("normalize has {} mean/std value(s) but the backbone has a different number of channels", a.mean.len())),
        None => (name.span(), "the default normalization is ImageNet's (3 channels): give `augment: { normalize: mean [..] std [..] }` with one value per channel".to_string()),
    };
    let msg = msg.replace('{', "{{").replace('}', "}}"); // a format string
    checks.extend((!a.normalize_refused).then(|| {
        quote_spanned! {span=>
            const _: () = ::core::assert!(#bbv::CHANNELS == #n_channels, #msg);
        }
    }));

    let (st, cm) = (float(ir.student_temp), float(ir.center_momentum));
    let (tt0, tt1, ttw) = (float(ir.teacher_temp.0), float(ir.teacher_temp.1), float(ir.teacher_temp.2));
    let (tm0, tm1) = (float(ir.teacher_momentum.0), float(ir.teacher_momentum.1));
    let o = &ir.optimizer;
    let kind = match o.kind {
        OptKind::AdamW => quote!(#rt::config::OptimizerName::AdamW),
        OptKind::Sgd => quote!(#rt::config::OptimizerName::Sgd),
    };
    let lr_per = match o.lr_per {
        Some(n) => {
            let n = int(n);
            quote!(::core::option::Option::Some(#n))
        }
        None => quote!(::core::option::Option::None),
    };
    let (lr, warm, min_lr, wd0, wd1, mom) = (
        float(o.lr),
        float(o.warmup_epochs),
        float(o.min_lr),
        float(o.weight_decay.0),
        float(o.weight_decay.1),
        float(o.momentum),
    );
    let global = crop_config(&ir.global, rt);
    let local = match &ir.local {
        Some(l) => {
            let c = crop_config(l, rt);
            quote!(::core::option::Option::Some(#c))
        }
        None => quote!(::core::option::Option::None),
    };
    let koleo = float(ir.koleo);
    let centering = match ir.sinkhorn_knopp {
        Some(n) => {
            let n = int(n);
            quote!(#rt::config::Centering::SinkhornKnopp { iterations: #n })
        }
        None => quote!(#rt::config::Centering::Ema),
    };
    let (clip, freeze, epochs, batch) =
        (float(ir.clip_grad), int(ir.freeze_last_layer), int(ir.epochs), int(ir.batch_size));
    let clip_scope = if ir.clip_per_module { quote!(Module) } else { quote!(Parameter) };
    let freeze_rule = if ir.freeze_zero_lr { quote!(ZeroLr) } else { quote!(Skip) };
    let lr_scaling = if o.lr_sqrt { quote!(Sqrt) } else { quote!(Linear) };
    let (layer_decay, patch_embed_lr) = (float(o.layer_decay), float(o.patch_embed_lr));
    let flip = float(a.flip);
    let jitter = match a.color_jitter {
        Some((s, p)) => {
            let (s0, s1, s2, s3, p) = (float(s[0]), float(s[1]), float(s[2]), float(s[3]), float(p));
            quote!(::core::option::Option::Some(([#s0, #s1, #s2, #s3], #p)))
        }
        None => quote!(::core::option::Option::None),
    };
    let gray = float(a.grayscale);
    let blur = match a.blur {
        Some(((lo, hi), p, k)) => {
            let (lo, hi, p0, p1, p2, k) = (float(lo), float(hi), float(p[0]), float(p[1]), float(p[2]), int(k));
            quote!(::core::option::Option::Some(((#lo, #hi), [#p0, #p1, #p2], #k)))
        }
        None => quote!(::core::option::Option::None),
    };
    let solarize = opt_pair(a.solarize);
    let mean: Vec<_> = a.mean.iter().map(|v| float(*v)).collect();
    let std: Vec<_> = a.std.iter().map(|v| float(*v)).collect();

    quote! {
        #(#attrs)*
        #vis struct #name {
            pub backbone: #bb,
            pub head: #rt::nn::DinoHead<#dim, #hid, #bot, #out>,
            /// iBOT's mask token (`backbone.mask_token`), when the objective declares iBOT.
            pub mask_token: ::core::option::Option<#p_::GraphTensor<#p_::R2<1, #dim>>>,
            /// iBOT's own head, when declared separate.
            pub ibot_head: ::core::option::Option<#rt::nn::DinoHead<#dim, #hid, #bot, #out>>,
        }

        #(#checks)*

        impl #name {
            /// The declaration, as data.
            pub const CONFIG: #rt::config::DinoConfig = #rt::config::DinoConfig {
                name: #name_str,
                doc: #doc,
                backbone: #bbv::CONFIG,
                head: #rt::config::HeadConfig { hidden: #hid, bottleneck: #bot, out: #out, layers: #layers, norm_last_layer: #nll },
                global: #global,
                local: #local,
                student_temp: #st,
                teacher_temp: (#tt0, #tt1, #ttw),
                center_momentum: #cm,
                teacher_momentum: (#tm0, #tm1),
                optimizer: #rt::config::OptimizerConfig {
                    kind: #kind,
                    lr: #lr,
                    lr_per: #lr_per,
                    lr_scaling: #rt::config::LrScaling::#lr_scaling,
                    warmup_epochs: #warm,
                    min_lr: #min_lr,
                    weight_decay: (#wd0, #wd1),
                    momentum: #mom,
                    layer_decay: #layer_decay,
                    patch_embed_lr: #patch_embed_lr,
                },
                clip_grad: #clip,
                clip_scope: #rt::config::ClipScope::#clip_scope,
                koleo: #koleo,
                centering: #centering,
                ibot: #ibot,
                freeze_last_layer: #freeze,
                freeze_rule: #rt::config::FreezeRule::#freeze_rule,
                epochs: #epochs,
                batch_size: #batch,
                augment: #rt::config::AugmentConfig {
                    flip: #flip,
                    color_jitter: #jitter,
                    grayscale: #gray,
                    blur: #blur,
                    solarize: #solarize,
                    mean: #rt::config::PerChannel::new(&[#(#mean),*]),
                    std: #rt::config::PerChannel::new(&[#(#std),*]),
                },
            };

            /// Create the parameter nodes of one network (call twice: student and teacher).
            pub fn new(cx: &mut #p_::Graph) -> Self {
                Self {
                    backbone: #bbv::new(cx),
                    head: #rt::nn::DinoHead::new(cx, #layers, #nll),
                    mask_token: #new_mask_token,
                    ibot_head: #new_ibot_head,
                }
            }

            #(#forwards)*
        }

        impl #rt::nn::Parameters for #name {
            fn visit(&self, v: &mut #rt::nn::ParamVisitor) {
                // the backbone's parameters through `VitModel` (see above)
                // (and iBOT's mask token under the backbone's name, as DINOv2 keeps it)
                struct BackboneParams<'a>(&'a #bb, ::core::option::Option<#p_::GraphTensor<#p_::R2<1, #dim>>>);
                impl #rt::nn::Parameters for BackboneParams<'_> {
                    fn visit(&self, v: &mut #rt::nn::ParamVisitor) {
                        #bbv::visit_backbone(self.0, v);
                        if let ::core::option::Option::Some(t) = self.1 {
                            // DINOv2: `nn.Parameter(torch.zeros(1, embed_dim))`
                            v.tensor("mask_token", t, #rt::nn::Init::Zeros);
                        }
                    }
                }
                v.module("backbone", &BackboneParams(&self.backbone, self.mask_token));
                v.module("head", &self.head);
                if let ::core::option::Option::Some(h) = &self.ibot_head {
                    v.module("ibot_head", h);
                }
            }
        }

        impl #rt::model::DinoModel for #name {
            const CONFIG: #rt::config::DinoConfig = #name::CONFIG;
            type Backbone = #bb;
            type Channels = #p_::Const<#ch>;
            type Global = #p_::Const<#gsize>;
            type Local = #p_::Const<#lsize>;
            type Embed = #p_::Const<#dim>;
            type Out = #p_::Const<#out>;
            type GlobalPatches = #p_::Const<#gnp>;
            fn new(cx: &mut #p_::Graph) -> Self {
                #name::new(cx)
            }
            fn backbone(&self) -> &Self::Backbone {
                &self.backbone
            }
            fn backbone_global<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, Self::Channels, Self::Global, Self::Global)>,
            ) -> #p_::GraphTensor<(B, Self::Embed)> {
                self.backbone_global(x)
            }
            fn backbone_local<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, Self::Channels, Self::Local, Self::Local)>,
            ) -> #p_::GraphTensor<(B, Self::Embed)> {
                #local_call
            }
            fn backbone_global_drop<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, Self::Channels, Self::Global, Self::Global)>,
                drop: &[#rt::nn::BranchMasks<B>],
            ) -> #p_::GraphTensor<(B, Self::Embed)> {
                self.backbone_global_drop(x, drop)
            }
            fn backbone_local_drop<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, Self::Channels, Self::Local, Self::Local)>,
                drop: &[#rt::nn::BranchMasks<B>],
            ) -> #p_::GraphTensor<(B, Self::Embed)> {
                #local_drop_call
            }
            fn head<B: #p_::Dimension>(&self, z: #p_::GraphTensor<(B, Self::Embed)>) -> #p_::GraphTensor<(B, Self::Out)> {
                #p_::Module::forward(&self.head, z)
            }
            fn backbone_global_tokens<B: #p_::Dimension>(
                &self,
                x: #p_::GraphTensor<(B, Self::Channels, Self::Global, Self::Global)>,
                mask: ::core::option::Option<#p_::GraphTensor<(B, Self::GlobalPatches)>>,
                drop: &[#rt::nn::BranchMasks<B>],
            ) -> (#p_::GraphTensor<(B, Self::Embed)>, #p_::GraphTensor<(B, Self::GlobalPatches, Self::Embed)>) {
                let mask = mask.map(|m| (m, self.mask_token.expect("a mask needs an objective declared with `ibot`")));
                #tokens_call
            }
            fn ibot_head<B: #p_::Dimension>(&self, z: #p_::GraphTensor<(B, Self::Embed)>) -> #p_::GraphTensor<(B, Self::Out)> {
                match &self.ibot_head {
                    ::core::option::Option::Some(h) => #p_::Module::forward(h, z),
                    ::core::option::Option::None => #p_::Module::forward(&self.head, z),
                }
            }
        }
    }
}
