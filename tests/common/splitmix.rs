//! The deterministic weights of `tests/reference/make_fixtures.py` (splitmix64 as a counter
//! hash, 24-bit uniforms in [-1, 1)), reproduced bit for bit.
#![allow(dead_code)]

/// `n` values uniform in [-1, 1): element k is `mix(seed + (offset + k + 1) * golden)`.
pub fn uniform(seed: u64, offset: u64, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|k| {
            let mut z = seed.wrapping_add((offset + k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32
        })
        .collect()
}

/// `(offset, scale)` of a parameter's weights, by name (as the script).
pub fn param_scale(name: &str) -> (f64, f64) {
    if name.ends_with("norm1.weight") || name.ends_with("norm2.weight") || name == "norm.weight" {
        (1.0, 0.1)
    } else if name.ends_with(".bias") {
        (0.0, 0.02)
    } else if name.ends_with(".gamma") {
        (0.5, 0.4)
    } else {
        (0.0, 0.05)
    }
}

/// Every parameter's values from a `keys` list (`name:numel,...` in state_dict order).
pub fn params(seed: u64, keys: &str) -> Vec<(String, Vec<f32>)> {
    let mut offset = 0u64;
    keys.split(',')
        .map(|kv| {
            let (name, n) = kv.rsplit_once(':').expect("name:numel");
            let n: usize = n.parse().expect("numel");
            let (base, scale) = param_scale(name);
            let v = uniform(seed, offset, n).into_iter().map(|u| (base + scale * u as f64) as f32).collect();
            offset += n as u64;
            (name.to_string(), v)
        })
        .collect()
}
