//! Position-embedding interpolation for crops of other sizes, DINO's way.
//!
//! DINO's `interpolate_pos_encoding` resizes the `g0 x g0` grid of patch position embeddings
//! with `F.interpolate(..., scale_factor=((w0 + 0.1) / g0, (h0 + 0.1) / g0), mode='bicubic')`
//! (align_corners false, no antialiasing; the +0.1 avoids floating-point errors in the output
//! size). Interpolation is linear in the embeddings, so it is a constant matrix `M`
//! (`gh*gw x g0*g0`) and the resized embeddings are `M @ pos`: a GEMM in the graph, through
//! which the gradient reaches `pos_embed`.

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

/// The `(gh*gw) x (g0*g0)` matrix that resizes a `g0 x g0` grid of position embeddings to
/// `gh x gw` as DINO does (row-major grids; the height axis is scaled by the *width* factor
/// as in DINO's code, which only matters for non-square crops).
pub fn dino_interpolation_matrix(g0: usize, gh: usize, gw: usize) -> Vec<f32> {
    let sh = (gw as f64 + 0.1) / g0 as f64;
    let sw = (gh as f64 + 0.1) / g0 as f64;
    let (oh, ow) = ((g0 as f64 * sh).floor() as usize, (g0 as f64 * sw).floor() as usize);
    assert_eq!((oh, ow), (gw, gh), "interpolated grid size");
    let my = bicubic_1d(g0, oh, sh);
    let mx = bicubic_1d(g0, ow, sw);
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

    #[test]
    fn rows_sum_to_one() {
        for r in dino_interpolation_matrix(7, 3, 3).chunks(49) {
            let s: f32 = r.iter().sum();
            assert!((s - 1.0).abs() < 1e-6, "row sum {s}");
        }
    }
}
