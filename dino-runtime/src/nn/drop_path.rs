//! Stochastic depth ("drop path") as DINO's student uses it: each residual branch of block
//! `i` is dropped for a whole sample with probability `rates[i]`, kept samples scaled by
//! `1 / (1 - rate)`. The graph multiplies each branch by a `(B,)` mask input
//! ([`Block::forward_drop`](super::Block::forward_drop)); the host draws the masks every step.
use rand::Rng;

/// Per-block drop rates: `torch.linspace(0, rate, depth)` (float32, as DINO builds `dpr`).
pub fn rates(rate: f64, depth: usize) -> Vec<f64> {
    if depth == 1 {
        return vec![0.0];
    }
    let (start, end) = (0f32, rate as f32);
    let step = (end - start) / (depth - 1) as f32;
    let half = depth / 2;
    (0..depth)
        .map(|i| if i < half { start + step * i as f32 } else { end - step * (depth - i - 1) as f32 })
        .map(|v| v as f64)
        .collect()
}

/// One branch's mask for `rows` samples: 0 where dropped, `1 / keep` where kept. A sample is
/// kept when `U[0, 1) >= rate` (DINO's `floor(keep + U)`).
pub fn sample(rng: &mut impl Rng, rows: usize, rate: f64) -> Vec<f32> {
    let keep = 1.0 - rate;
    let scale = (1.0 / keep) as f32;
    (0..rows).map(|_| if rng.gen::<f32>() as f64 >= rate { scale } else { 0.0 }).collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn rates_are_torch_linspace() {
        assert_eq!(rates(0.1, 1), [0.0]);
        let r = rates(0.1, 6);
        assert_eq!(r.len(), 6);
        assert_eq!((r[0], r[5]), (0.0, 0.1f32 as f64));
        assert!((r[3] - 0.06).abs() < 1e-7);
        assert!(rates(0.0, 12).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn masks_keep_the_expected_fraction_and_preserve_the_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let m = sample(&mut rng, 20000, 0.25);
        let kept = m.iter().filter(|&&v| v > 0.0).count() as f64 / m.len() as f64;
        assert!((kept - 0.75).abs() < 0.015, "kept {kept}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        let mean = m.iter().map(|&v| v as f64).sum::<f64>() / m.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "E[mask] = {mean}");
        assert!(sample(&mut rng, 100, 0.0).iter().all(|&v| v == 1.0));
    }
}
