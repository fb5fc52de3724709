//! Every compiler pass keeps every output equal to the unoptimized graph's, on the zoo:
//!
//! - the DINO training step of `fmnist-small` compiled by every row of the ablation (every
//!   pass, none, each pass switched off in turn): loss, new student, teacher and center after
//!   one step from the same initialization and inputs, against the graph with no pass;
//! - the forward pass of every backbone of the zoo on small inputs (4 patches: the same
//!   layers and widths as at 224 px, few tokens), all passes against none;
//! - the DINO ViT-S/16 training step (one image; its crop sizes are part of the type, so it
//!   cannot be made smaller), all passes against the GEMM pass alone: the unoptimized graph
//!   of that step would take minutes here, and the GEMM pass is checked against it by the
//!   forward cases, which have every GEMM shape of the step's blocks.
//!
//! Tolerances: relative to `1 + max |reference|` of each tensor. Fused kernels and GEMMs
//! sum in other orders than the primitive graph (rows of up to a few thousand terms), so
//! fp32 outputs differ by a few 1e-6 relative; after one AdamW step an update is
//! `lr * m / (sqrt(v) + eps)`, which for a gradient near zero turns that rounding into a
//! difference of up to `2 lr` (1e-3 at lr 5e-4) on a weight: 2e-3 bounds it. The forward
//! pass has no such amplification: 1e-4.
mod common;
use common::big_stack;
use dino::bench::passes::{ablate, ablate_against, standard_rows, AblationOptions, Pipeline, Row, SLOW_STEP_S};
use dino::device::Device;
use dino::eval::vit_runner::{Output, VitRunner};
use dino::runtime::backend::plan::{Policy, Precision};
use dino::runtime::backend::{Builtin, Passes};
use dino::runtime::model::VitModel;
use dino::runtime::testing::Rng;
use dino_models::{vit_names, with_vit, VitVisitor};

fn options(batch: usize) -> AblationOptions {
    AblationOptions {
        batch,
        runs: 1,
        warmup: 0,
        rounds: 1,
        device: Device::Cpu,
        stock_timeout_s: 1,
        slow_step_s: SLOW_STEP_S,
    }
}

#[test]
fn every_row_of_the_fmnist_small_ablation_equals_the_unoptimized_step() {
    big_stack(|| {
        let mut rows = standard_rows(false);
        rows.push(Row::with_policy(Policy::of(Precision::Bf16)));
        let table = ablate("fmnist-small", rows, options(2), &mut |_| {}).expect("ablation");
        assert_eq!(table.rows.len(), 3 + Builtin::ALL.len());
        let (fp32_rows, bf16_row) = table.rows.split_at(table.rows.len() - 1);
        // bf16 (emulated) differs by its rounding: more than any fp32 pipeline's reassociation,
        // within what tests/precision.rs allows a bf16 step (5% of the loss, 2 lr on a weight;
        // relative to 1 + max |reference| here)
        let b = &bf16_row[0];
        assert_eq!(b.name, "all passes, bf16");
        let worst32 = fp32_rows.iter().filter_map(|r| r.max_error).fold(0f64, f64::max);
        let e16 = b.max_error.expect("checked");
        eprintln!("bf16 row: {e16:.2e} at {:?}; fp32 rows at most {worst32:.2e}", b.worst_tensor);
        assert!(b.failed.is_none() && worst32 < e16 && e16 <= 5e-2, "{e16} vs {worst32}");
        for r in fp32_rows {
            assert!(r.failed.is_none(), "{}: {:?}", r.name, r.failed);
            let e = r.max_error.expect("checked");
            assert!(e <= 2e-3, "{}: differs from the unoptimized step by {e:.3e} at {:?}", r.name, r.worst_tensor);
            assert!(r.step_s.is_some_and(|t| t > 0.0) && r.compile_total_s >= 0.0);
        }
        let row = |name: &str| table.rows.iter().find(|r| r.name == name).expect(name);
        // the passes do something: fewer kernels, less memory planned, less time
        let (all, none) = (row("all passes"), row("no passes"));
        assert!(all.kernels.unwrap() * 3 < none.kernels.unwrap(), "{:?} vs {:?}", all.kernels, none.kernels);
        assert!(all.arena_mb.unwrap() < none.arena_mb.unwrap());
        assert!(all.step_s.unwrap() < row("without gemm").step_s.unwrap());
        assert_eq!(none.max_error, Some(0.0));
        assert_eq!(table.reference, "no passes");
        let text = table.table();
        assert!(!text.contains("max error against"), "{text}");
        for r in &table.rows {
            assert!(text.contains(&r.name), "{text}");
        }
        let png = std::env::temp_dir().join(format!("dino-passes-{}.png", std::process::id()));
        table.chart(&png).expect("chart");
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
        std::fs::remove_file(&png).ok();
    })
}

#[test]
fn an_ablation_without_a_reference_row_is_refused() {
    big_stack(|| {
        let rows = vec![dino::bench::passes::Row::ours("all", Passes::standard())];
        let e = ablate("fmnist-small", rows, options(1), &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("no passes"), "{e}");
        let e = ablate("no-such-model", standard_rows(false), options(1), &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("no-such-model") && e.contains("fmnist-small"), "{e}");
        assert!(matches!(standard_rows(true).last().unwrap().pipeline, Pipeline::Stock));
    })
}

/// `dino bench passes --reference all-passes` (a step too slow to run unoptimized, like
/// ViT-S/16's): no row without passes, every row checked against the full pipeline, and the
/// table says so.
#[test]
fn an_ablation_may_be_checked_against_every_pass() {
    big_stack(|| {
        let rows = vec![
            Row::ours("all passes", Passes::standard()),
            Row::ours("without fusion", Passes::standard().without("fusion").unwrap()),
        ];
        let table = ablate_against("fmnist-small", rows, 0, options(1), &mut |_| {}).expect("ablation");
        assert_eq!(table.reference, "all passes");
        assert_eq!(table.rows[0].max_error, Some(0.0));
        let e = table.rows[1].max_error.expect("checked");
        assert!(e <= 2e-3, "without fusion differs from all passes by {e}");
        assert!(table.table().contains("max error against `all passes`"), "{}", table.table());
        let rows = vec![Row::stock(), Row::ours("all passes", Passes::standard())];
        let e = ablate_against("fmnist-small", rows, 0, options(1), &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("not one of dino's pipelines"), "{e}");
    })
}

struct Forward;

impl VitVisitor for Forward {
    type Output = f32;

    /// Largest relative difference of all passes from none on two random 2x2-patch images.
    fn visit<V: VitModel>(self, name: &'static str) -> f32 {
        let run = |passes: &Passes| {
            let mut r = VitRunner::<V>::new_with(Output::Tokens, None, Device::Cpu, passes).expect(name);
            r.init_random(0);
            let s = 2 * V::PATCH;
            let mut rng = Rng::new(5);
            let images: Vec<Vec<f32>> = (0..2).map(|_| rng.uniform(V::CHANNELS * s * s, 1.0)).collect();
            r.run(&images, s, s).expect(name).concat()
        };
        let (want, got) = (run(&Passes::none()), run(&Passes::standard()));
        assert_eq!(want.len(), got.len(), "{name}");
        let scale = 1.0 + want.iter().fold(0f32, |m, x| m.max(x.abs()));
        want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs() / scale))
    }
}

#[test]
fn every_zoo_backbone_forward_equals_the_unoptimized_graph() {
    big_stack(|| {
        let mut seen = vec![];
        for name in vit_names() {
            let Some((backbone, err)) = with_vit(name, Named(Forward)) else { continue };
            if seen.contains(&backbone) {
                continue;
            }
            seen.push(backbone);
            assert!(err <= 1e-4, "{name} ({backbone}): all passes differ from none by {err:.3e}");
        }
        assert!(seen.len() >= 8, "{seen:?}");
    })
}

/// Runs a visitor once per distinct backbone: the name it was visited as comes back too.
struct Named<T>(T);

impl<T: VitVisitor> VitVisitor for Named<T> {
    type Output = (&'static str, T::Output);
    fn visit<V: VitModel>(self, name: &'static str) -> Self::Output {
        (name, self.0.visit::<V>(name))
    }
}

#[test]
fn dino_vits16_step_with_every_pass_equals_the_gemm_pass_alone() {
    big_stack(|| {
        let rows = vec![
            dino::bench::passes::Row::ours("gemm alone", Passes::only(&[Builtin::Gemm])),
            dino::bench::passes::Row::ours("all passes", Passes::standard()),
        ];
        // the reference row must have no passes; here the GEMM-only row plays it (see the top)
        let table =
            dino::bench::passes::ablate_against("dino-vits16", rows, 0, options(1), &mut |_| {}).expect("ablation");
        let all = &table.rows[1];
        assert!(all.failed.is_none(), "{:?}", all.failed);
        let e = all.max_error.unwrap();
        assert!(e <= 2e-3, "all passes differ from the GEMM pass alone by {e:.3e} at {:?}", all.worst_tensor);
    })
}
