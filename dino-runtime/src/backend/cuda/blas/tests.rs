//! cuBLAS call planning against the CPU's product, by emulating what each call computes.
use super::tests_support::random_case;
use super::*;
use crate::backend::gemm::GemmAxis;
use crate::backend::layout::{Axis, Layout};
use rand::{Rng, SeedableRng};

#[test]
fn cublas_calls_compute_what_the_cpu_gemm_computes() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut batched, mut multi_k, mut copies, mut out_perm, mut gathered) = (0, 0, 0, 0, 0);
    let mut transposes = std::collections::HashSet::new();
    for case in 0..3000 {
        let (axes, la, lb, na, nb) = random_case(&mut rng);
        let mut a: Vec<f32> = (0..na).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut b: Vec<f32> = (0..nb).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let plan = GemmPlan::new(&axes, &la, &lb);
        let mut want = vec![0f32; plan.out_len()];
        plan.run(&a, &b, &mut want);
        let r = recipe(&axes, &la, &lb).unwrap_or_else(|e| panic!("case {case}: {e:?} {axes:?} {la:?} {lb:?}"));
        // the runtime's copy kernels, run here on the CPU
        for (o, k) in &r.copies {
            let mut c = vec![0f32; k.out_len()];
            k.run(&[if *o == 0 { &a } else { &b }], &mut c);
            if *o == 0 {
                a = c;
            } else {
                b = c;
            }
        }
        copies += (!r.copies.is_empty()) as usize;
        out_perm += r.unpermute.is_some() as usize;
        let blas = r.blas;
        let scratch_len = r.unpermute.as_ref().map_or(plan.out_len(), |u| u.1);
        // what a plan read from a file is checked by: every call inside the buffers, and
        // a buffer one element shorter caught (every element of A, B and C is used)
        blas.check(a.len(), b.len(), scratch_len).unwrap_or_else(|e| panic!("case {case}: {e}"));
        if !blas.calls.is_empty() {
            for (da, db, dc) in [(1, 0, 0), (0, 1, 0), (0, 0, 1)] {
                let short = blas.check(a.len() - da, b.len() - db, scratch_len - dc);
                assert!(short.is_err(), "case {case}: buffers shorter by {:?} pass", (da, db, dc));
            }
        }
        let mut got = vec![f32::NAN; scratch_len];
        if blas.zero_fill {
            got.fill(0.0);
        }
        for call in &blas.calls {
            emulate(call, &a, &b, &mut got).unwrap_or_else(|e| panic!("case {case}: {e}"));
            batched += (call.batch > 1) as usize;
            multi_k += (call.beta != 0.0) as usize;
            transposes.insert((call.trans_x, call.trans_y, call.x));
        }
        // the same calls gathered into one pointer-array call: each matrix at its offsets
        if let Some(mats) = blas.gathered() {
            let mut again = vec![f32::NAN; scratch_len];
            let c0 = blas.calls[0];
            for [ox, oy, oc] in mats {
                let one = BlasCall { off_x: ox, off_y: oy, off_c: oc, batch: 1, ..c0 };
                emulate(&one, &a, &b, &mut again).unwrap_or_else(|e| panic!("case {case} gathered: {e}"));
            }
            assert!(got.iter().zip(&again).all(|(x, y)| x == y || (x.is_nan() && y.is_nan())), "case {case}");
            gathered += 1;
        }
        if let Some((k, _)) = &r.unpermute {
            let mut o = vec![f32::NAN; k.out_len()];
            k.run(&[&got], &mut o);
            got = o;
        }
        assert_eq!(got.len(), want.len(), "case {case}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "case {case} elem {i}: {g} vs {w}\n{axes:?}\n{blas:?}");
        }
    }
    // the random cases exercise every form
    eprintln!(
        "batched calls {batched}, accumulating calls {multi_k}, copies {copies}, permuted outputs {out_perm}, \
         gathered into one call {gathered}"
    );
    assert!(
        batched > 100 && multi_k > 50 && copies > 20 && out_perm > 20 && gathered > 50,
        "batched {batched}, accumulated {multi_k}, copies {copies}, permuted {out_perm}, gathered {gathered}"
    );
    assert_eq!(transposes.len(), 8, "all N/T combinations, both orientations: {transposes:?}");
}

#[test]
fn a_gathered_operand_asks_for_a_copy() {
    // a[i, t] with strides (2, 3): neither axis adjacent
    let la = Layout {
        axes: vec![
            Axis { len: 3, stride: 2, lo: 0, hi: 3 },
            Axis { len: 1, stride: 0, lo: 0, hi: 1 },
            Axis { len: 4, stride: 3, lo: 0, hi: 4 },
        ],
        offset: 0,
    };
    let lb = Layout {
        axes: vec![
            Axis { len: 3, stride: 0, lo: 0, hi: 3 },
            Axis { len: 1, stride: 1, lo: 0, hi: 1 },
            Axis { len: 4, stride: 1, lo: 0, hi: 4 },
        ],
        offset: 0,
    };
    let plan = GemmPlan::new(&[GemmAxis::M, GemmAxis::N, GemmAxis::K], &la, &lb);
    assert_eq!(BlasPlan::new(&plan), Err(NeedsCopy::Input(Operand::A)));
}
