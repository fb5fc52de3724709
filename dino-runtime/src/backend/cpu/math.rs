//! Branch-free scalar versions of the transcendental primitives, written so that loops over
//! slices auto-vectorize (libm's `exp2f`/`log2f`/`sinf` are calls LLVM cannot vectorize).
//!
//! Accuracy against the standard library (checked in the tests below): `exp2` within 2 ulp,
//! `log2` within 3 ulp (1e-7 absolute near 1), `sin` within 2e-7 absolute for
//! |x| < 1e5 (reduction in f64).
use std::f64::consts::PI;

/// Adding 1.5 * 2^23 to a float of magnitude below 2^22 rounds it to an integer (ties to even)
/// held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
const ROUND_MAGIC_F64: f64 = 6_755_399_441_055_744.0;

/// 2^x: x = n + f with |f| <= 1/2, 2^f by its degree-7 Taylor series in f ln 2 (truncation
/// error below 6e-9), 2^n built from exponent bits in two halves so that results near the
/// overflow and underflow limits are scaled without spurious overflow.
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    let xc = x.clamp(-160.0, 130.0);
    // n = round(xc) and its integer value through the 1.5 * 2^23 trick: float-to-int
    // conversions (`as i32`) saturate and do not vectorize
    let big = xc + ROUND_MAGIC;
    let ni = (big.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let n = big - ROUND_MAGIC;
    let f = xc - n;
    let t = f * std::f32::consts::LN_2;
    let p = 1.0
        + t * (1.0
            + t * (0.5
                + t * (1.0 / 6.0 + t * (1.0 / 24.0 + t * (1.0 / 120.0 + t * (1.0 / 720.0 + t * (1.0 / 5040.0)))))));
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    let r = p * s1 * s2;
    // clamp kept NaN as NaN; restore exact infinities of the clamped range
    if x.is_nan() {
        x
    } else {
        r
    }
}

/// log2(x): x = m 2^e with m in [sqrt(1/2), sqrt(2)), log2(m) = (2 / ln 2) atanh((m-1)/(m+1))
/// by its odd series to t^11 (|t| <= 0.172, truncation below 4e-10).
#[inline(always)]
pub fn log2(x: f32) -> f32 {
    // subnormals: scale up by 2^23 first
    let sub = x < f32::MIN_POSITIVE;
    let xs = if sub { x * 8388608.0 } else { x };
    let bits = xs.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127 - if sub { 23 } else { 0 };
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += big as i32;
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let s = t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0))))));
    let r = e as f32 + s * (2.0 / std::f32::consts::LN_2);
    // special values: log2(0) = -inf, log2(x<0) = NaN, log2(inf) = inf, NaN stays NaN
    if x == 0.0 {
        f32::NEG_INFINITY
    } else if x < 0.0 || x.is_nan() {
        f32::NAN
    } else if x == f32::INFINITY {
        f32::INFINITY
    } else {
        r
    }
}

/// sin(x): x = k pi + r with |r| <= pi/2 (reduced in f64), sin(r) by its Taylor series to
/// r^15 (truncation below 1e-9), sign flipped for odd k.
#[inline(always)]
pub fn sin(x: f32) -> f32 {
    let xd = x as f64;
    // k = round(x / pi) and its parity through the 1.5 * 2^52 trick (see exp2)
    let big = xd * (1.0 / PI) + ROUND_MAGIC_F64;
    let odd = big.to_bits() & 1 == 1;
    let k = big - ROUND_MAGIC_F64;
    let r = (xd - k * PI) as f32;
    let r2 = r * r;
    let s = r
        * (1.0
            + r2 * (-1.0 / 6.0
                + r2 * (1.0 / 120.0
                    + r2 * (-1.0 / 5040.0
                        + r2 * (1.0 / 362880.0
                            + r2 * (-1.0 / 39916800.0 + r2 * (1.0 / 6227020800.0 + r2 * (-1.0 / 1307674368000.0))))))));
    let v = if odd { -s } else { s };
    if x.is_finite() {
        v
    } else {
        f32::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        if a == b || (a.is_nan() && b.is_nan()) {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    fn sweep(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp2_within_2_ulp() {
        let mut worst = 0;
        for x in sweep(-149.0, 127.9, 2_000_003) {
            let want = x.exp2();
            if want.is_normal() {
                worst = worst.max(ulps(exp2(x), want));
            } else {
                assert!((exp2(x) - want).abs() <= f32::from_bits(2), "exp2({x})");
            }
        }
        assert!(worst <= 2, "exp2 worst {worst} ulp");
        assert_eq!(exp2(200.0), f32::INFINITY);
        assert_eq!(exp2(-200.0), 0.0);
        assert!(exp2(f32::NAN).is_nan());
        assert_eq!(exp2(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp2(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn log2_within_3_ulp() {
        let mut worst = 0;
        for x in sweep(1e-30, 1e4, 1_000_003).chain(sweep(0.5, 2.0, 1_000_003)) {
            let (got, want) = (log2(x), x.log2());
            if want.abs() > 1e-3 {
                worst = worst.max(ulps(got, want));
            } else {
                assert!((got - want).abs() < 1e-7, "log2({x}) = {got}, want {want}");
            }
        }
        assert!(worst <= 3, "log2 worst {worst} ulp");
        assert!((log2(1e-40) - 1e-40f32.log2()).abs() < 1e-4, "subnormal");
        assert_eq!(log2(0.0), f32::NEG_INFINITY);
        assert!(log2(-1.0).is_nan());
        assert_eq!(log2(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn sin_within_2e7() {
        let mut worst = 0f32;
        for x in sweep(-1e5, 1e5, 4_000_003).chain(sweep(-10.0, 10.0, 1_000_003)) {
            worst = worst.max((sin(x) - x.sin()).abs());
        }
        assert!(worst <= 2e-7, "sin worst abs error {worst}");
        assert!(sin(f32::INFINITY).is_nan());
    }
}
