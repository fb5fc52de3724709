//! Position-embedding interpolation for crops of other sizes, DINO's way and DINOv2's.
//!
//! DINO's `interpolate_pos_encoding` resizes the `g0 x g0` grid of patch position embeddings
//! with `F.interpolate(..., scale_factor=((w0 + 0.1) / g0, (h0 + 0.1) / g0), mode='bicubic')`
//! (align_corners false, no antialiasing; the +0.1 avoids floating-point errors in the output
//! size). Interpolation is linear in the embeddings, so it is a constant matrix `M`
//! (`gh*gw x g0*g0`) and the resized embeddings are `M @ pos`: a GEMM in the graph, through
//! which the gradient reaches `pos_embed`.
//!
//! DINOv2's models with registers resize to the exact grid with antialiasing instead
//! (`interpolate_antialias=True, interpolate_offset=0`: `F.interpolate(..., size=(w0, h0),
//! mode='bicubic', antialias=True)`), which for a shrinking grid averages over the source rows
//! each output row covers rather than sampling four of them.

/// PyTorch's cubic convolution coefficient.
const A: f64 = -0.75;

/// Weights of the 4 taps at offsets -1, 0, 1, 2 for fractional position `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// `out x inp` matrix of 1-D bicubic resampling with PyTorch's `upsample_bicubic2d` rules when
/// a scale factor is given: source coordinate `(j + 0.5) / scale - 0.5`, taps clamped to the
/// border.
pub fn bicubic_1d(inp: usize, out: usize, scale: f64) -> Vec<f64> {
    let mut m = vec![0.0; out * inp];
    for j in 0..out {
        let src = (j as f64 + 0.5) / scale - 0.5;
        let base = src.floor();
        let w = cubic_weights(src - base);
        for (k, wk) in w.iter().enumerate() {
            let i = (base as i64 - 1 + k as i64).clamp(0, inp as i64 - 1) as usize;
            m[j * inp + i] += wk;
        }
    }
    m
}

/// The cubic kernel of PyTorch's antialiased resampling (Keys' `a = -0.5`, as PIL's; the
/// plain bicubic uses -0.75).
fn aa_cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// `out x inp` matrix of 1-D antialiased bicubic resampling to `out` samples, PyTorch's
/// `interpolate(..., mode='bicubic', antialias=True, align_corners=False, size=out)`: output
/// `i` is centred at `scale (i + 0.5)` (`scale = inp / out`), the kernel is stretched by
/// `scale` when shrinking (support `2 scale`, else 2), taps outside the input are dropped
/// and the rest normalized to sum 1.
pub fn antialiased_bicubic_1d(inp: usize, out: usize) -> Vec<f64> {
    let scale = inp as f64 / out as f64;
    let (support, inv) = if scale >= 1.0 { (2.0 * scale, 1.0 / scale) } else { (2.0, 1.0) };
    let mut m = vec![0.0; out * inp];
    for i in 0..out {
        let center = scale * (i as f64 + 0.5);
        // truncation toward zero, as PyTorch's integer casts
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(inp as i64).max(0) as usize;
        let row = &mut m[i * inp..(i + 1) * inp];
        for (j, w) in row.iter_mut().enumerate().take(hi).skip(lo) {
            *w = aa_cubic((j as f64 - center + 0.5) * inv);
        }
        let total: f64 = row.iter().sum();
        if total != 0.0 {
            row.iter_mut().for_each(|w| *w /= total);
        }
    }
    m
}

/// The separable 2-D matrix of two 1-D ones, rows `(y, x)` of `oh x ow`, columns `(iy, ix)`.
fn outer(my: &[f64], mx: &[f64], g0: usize, oh: usize, ow: usize) -> Vec<f32> {
    let mut m = vec![0f32; oh * ow * g0 * g0];
    for y in 0..oh {
        for x in 0..ow {
            for iy in 0..g0 {
                for ix in 0..g0 {
                    m[(y * ow + x) * g0 * g0 + iy * g0 + ix] = (my[y * g0 + iy] * mx[x * g0 + ix]) as f32;
                }
            }
        }
    }
    m
}

/// The `(gh*gw) x (g0*g0)` matrix that resizes a `g0 x g0` grid of position embeddings to
/// `gh x gw` as DINOv2's models with registers do: antialiased bicubic to the exact size (the
/// axes named as in DINOv2's code, as [`dino_interpolation_matrix`] does).
pub fn antialiased_interpolation_matrix(g0: usize, gh: usize, gw: usize) -> Vec<f32> {
    let (oh, ow) = (gw, gh);
    outer(&antialiased_bicubic_1d(g0, oh), &antialiased_bicubic_1d(g0, ow), g0, oh, ow)
}

/// The `(gh*gw) x (g0*g0)` matrix that resizes a `g0 x g0` grid of position embeddings to
/// `gh x gw` as DINO does (row-major grids; the height axis is scaled by the *width* factor
/// as in DINO's code, which only matters for non-square crops).
pub fn dino_interpolation_matrix(g0: usize, gh: usize, gw: usize) -> Vec<f32> {
    let sh = (gw as f64 + 0.1) / g0 as f64;
    let sw = (gh as f64 + 0.1) / g0 as f64;
    let (oh, ow) = ((g0 as f64 * sh).floor() as usize, (g0 as f64 * sw).floor() as usize);
    assert_eq!((oh, ow), (gw, gh), "interpolated grid size");
    outer(&bicubic_1d(g0, oh, sh), &bicubic_1d(g0, ow, sw), g0, oh, ow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::TensorFile;

    #[test]
    fn equals_torch_interpolate() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/pos_resample.safetensors");
        let f = TensorFile::load(path).expect("fixture from tests/reference/make_fixtures.py");
        for (g0, g) in [(7, 3), (14, 6), (4, 4), (2, 3)] {
            let want = &f.get(&format!("m_{g0}_{g}")).unwrap().data;
            let got = dino_interpolation_matrix(g0, g, g);
            let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-6, "{g0}->{g}: max abs error {err:.2e} against torch");
        }
    }

    /// Against `F.interpolate(..., size=(g, g), mode='bicubic', antialias=True)` of each basis
    /// grid (float64): shrinking (DINOv2's 37x37 grid to 224 px's 16x16; 7 to 3) and growing.
    #[test]
    fn antialiased_equals_torch_interpolate() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/pos_resample_aa.safetensors");
        let f = TensorFile::load(path).expect("fixture from tests/reference/make_fixtures.py");
        let check = |what: String, got: Vec<f32>| {
            let want = &f.get(&what).unwrap().data;
            assert_eq!(got.len(), want.len(), "{what}");
            let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-6, "{what}: max abs error {err:.2e} against torch");
        };
        for (g0, g) in [(7, 3), (4, 6), (4, 2)] {
            check(format!("m_{g0}_{g}"), antialiased_interpolation_matrix(g0, g, g));
        }
        for (g0, g) in [(37, 16), (16, 37)] {
            check(format!("a_{g0}_{g}"), antialiased_bicubic_1d(g0, g).iter().map(|w| *w as f32).collect());
        }
    }

    #[test]
    fn rows_sum_to_one() {
        for r in antialiased_interpolation_matrix(37, 16, 16).chunks(37 * 37) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        for r in dino_interpolation_matrix(7, 3, 3).chunks(49) {
            let s: f32 = r.iter().sum();
            assert!((s - 1.0).abs() < 1e-6, "row sum {s}");
        }
    }
}
