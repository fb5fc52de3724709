//! PIL's pixel operations, reproduced: what torchvision applies to PIL images in DINO's
//! pipeline, with PIL's fixed-point arithmetic and rounding.
//!
//! Semantics follow Pillow's `libImaging` (Resample.c, Blend.c, BoxBlur.c, Convert.c) and
//! torchvision's PIL functional ops; the tests compare with PIL/torchvision outputs.
use super::image::Image;

// ---- resampling (Image.resize, BICUBIC) ------------------------------------------------

/// PIL's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Bits of the fixed-point filter coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output position: first input index and fixed-point weights. The filter is
/// stretched by the scale when downsampling (antialiasing), as PIL does.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|v| {
                    let v = if total != 0.0 { v / total } else { *v };
                    let scaled = v * (1u32 << PRECISION_BITS) as f64;
                    (if v < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `img.resize((w, h), Image.BICUBIC)`: a horizontal then a vertical pass, each rounded to
/// 8 bits; a pass is skipped when that side keeps its size.
pub fn resize_bicubic(img: &Image, w: usize, h: usize) -> Image {
    let c = img.channels;
    let mut cur = img.clone();
    if w != img.width {
        let coeffs = coefficients(img.width, w);
        let mut out = vec![0u8; w * img.height * c];
        for y in 0..img.height {
            for (xx, (xmin, k)) in coeffs.iter().enumerate() {
                for ch in 0..c {
                    let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                    for (i, kv) in k.iter().enumerate() {
                        acc += cur.data[(y * cur.width + xmin + i) * c + ch] as i32 * kv;
                    }
                    out[(y * w + xx) * c + ch] = clip8(acc);
                }
            }
        }
        cur = Image::new(w, img.height, c, out);
    }
    if h != img.height {
        let coeffs = coefficients(img.height, h);
        let mut out = vec![0u8; w * h * c];
        for (yy, (ymin, k)) in coeffs.iter().enumerate() {
            for x in 0..w {
                for ch in 0..c {
                    let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                    for (i, kv) in k.iter().enumerate() {
                        acc += cur.data[((ymin + i) * w + x) * c + ch] as i32 * kv;
                    }
                    out[(yy * w + x) * c + ch] = clip8(acc);
                }
            }
        }
        cur = Image::new(w, h, c, out);
    }
    cur
}

/// `img.resize((w, h), Image.NEAREST)`: the source pixel under each output pixel's center.
pub fn resize_nearest(img: &Image, w: usize, h: usize) -> Image {
    let c = img.channels;
    let mut out = Vec::with_capacity(w * h * c);
    for y in 0..h {
        let sy = ((y as f64 + 0.5) * img.height as f64 / h as f64) as usize;
        for x in 0..w {
            let sx = ((x as f64 + 0.5) * img.width as f64 / w as f64) as usize;
            let p = (sy.min(img.height - 1) * img.width + sx.min(img.width - 1)) * c;
            out.extend_from_slice(&img.data[p..p + c]);
        }
    }
    Image::new(w, h, c, out)
}

/// `img.crop((left, top, left + width, top + height))` inside the image.
pub fn crop(img: &Image, top: usize, left: usize, height: usize, width: usize) -> Image {
    let c = img.channels;
    let mut out = Vec::with_capacity(width * height * c);
    for y in top..top + height {
        let row = (y * img.width + left) * c;
        out.extend_from_slice(&img.data[row..row + width * c]);
    }
    Image::new(width, height, c, out)
}

/// `ImageOps.mirror`: a horizontal flip.
pub fn hflip(img: &Image) -> Image {
    let c = img.channels;
    let mut out = Vec::with_capacity(img.data.len());
    for y in 0..img.height {
        for x in (0..img.width).rev() {
            let p = (y * img.width + x) * c;
            out.extend_from_slice(&img.data[p..p + c]);
        }
    }
    Image::new(img.width, img.height, c, out)
}

// ---- color (ImageEnhance, Image.blend) ----------------------------------------------------

/// `Image.blend(a, b, alpha)`: `a + alpha (b - a)` in f32, truncated; clipped when
/// extrapolating (alpha outside [0, 1]).
pub fn blend(a: &Image, b: &Image, alpha: f32) -> Image {
    if alpha == 0.0 {
        return a.clone();
    }
    if alpha == 1.0 {
        return b.clone();
    }
    let data = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| {
            let v = x as f32 + alpha * (y as i32 - x as i32) as f32;
            if (0.0..=1.0).contains(&alpha) {
                v as u8
            } else {
                v.clamp(0.0, 255.0) as u8
            }
        })
        .collect();
    Image::new(a.width, a.height, a.channels, data)
}

/// `ImageEnhance.Brightness(img).enhance(f)`: blend with black.
pub fn brightness(img: &Image, f: f32) -> Image {
    blend(&Image::filled(img.width, img.height, img.channels, 0), img, f)
}

/// `ImageEnhance.Contrast(img).enhance(f)`: blend with the image's mean gray level.
pub fn contrast(img: &Image, f: f32) -> Image {
    let l = img.to_luma();
    let mean = l.data.iter().map(|&v| v as f64).sum::<f64>() / l.data.len().max(1) as f64;
    let level = (mean + 0.5) as u8;
    blend(&Image::filled(img.width, img.height, img.channels, level), img, f)
}

/// `ImageEnhance.Color(img).enhance(f)`: blend with the image's grayscale (a no-op for L).
pub fn saturation(img: &Image, f: f32) -> Image {
    if img.channels == 1 {
        return img.clone();
    }
    blend(&img.to_luma().with_channels(3), img, f)
}

/// PIL's RGB to HSV (hue and saturation scaled to 0..255, truncated).
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return (0, 0, maxc);
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let rc = (maxc - r) as f32 / cr;
    let gc = (maxc - g) as f32 / cr;
    let bc = (maxc - b) as f32 / cr;
    let h = if r == maxc {
        bc - gc
    } else if g == maxc {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = ((h as f64 / 6.0 + 1.0) % 1.0) as f32;
    (((h * 255.0) as i32).clamp(0, 255) as u8, ((s * 255.0) as i32).clamp(0, 255) as u8, maxc)
}

/// PIL's HSV to RGB.
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let hf = h as f32 * 6.0 / 255.0;
    let i = hf.floor() as i32;
    let f = hf - i as f32;
    let fs = s as f32 / 255.0;
    let c = |x: f32| (x.round() as i32).clamp(0, 255) as u8;
    let vf = v as f32;
    let (p, q, t) = (c(vf * (1.0 - fs)), c(vf * (1.0 - fs * f)), c(vf * (1.0 - fs * (1.0 - f))));
    match i % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// torchvision's `adjust_hue` on a PIL image: shift the 8-bit hue (wrapping), a no-op for L.
pub fn hue(img: &Image, factor: f32) -> Image {
    if img.channels == 1 {
        return img.clone();
    }
    let shift = ((factor * 255.0) as i32) as u8; // numpy's uint8 cast of the float
    let data = img
        .data
        .chunks_exact(3)
        .flat_map(|p| {
            let (h, s, v) = rgb_to_hsv(p[0], p[1], p[2]);
            hsv_to_rgb(h.wrapping_add(shift), s, v)
        })
        .collect();
    Image::new(img.width, img.height, 3, data)
}

/// `RandomGrayscale`: luma, in as many channels as the input.
pub fn grayscale(img: &Image) -> Image {
    img.to_luma().with_channels(img.channels)
}

/// `ImageOps.solarize(img, threshold)`: invert every value at or above the threshold.
pub fn solarize(img: &Image, threshold: u8) -> Image {
    let data = img.data.iter().map(|&v| if v >= threshold { 255 - v } else { v }).collect();
    Image::new(img.width, img.height, img.channels, data)
}

// ---- blur -----------------------------------------------------------------------------------

/// One box-blur pass along rows with PIL's fractional-radius box (24-bit fixed point, edge
/// pixels extended).
fn box_blur_rows(img: &Image, radius: f32) -> Image {
    let r = radius as i64;
    let ww = ((1u32 << 24) as f32 / (radius * 2.0 + 1.0)) as u32;
    let fw = ((1u32 << 24) - (r as u32 * 2 + 1) * ww) / 2;
    let (w, c) = (img.width as i64, img.channels);
    let mut out = vec![0u8; img.data.len()];
    for y in 0..img.height {
        let row = &img.data[y * img.width * c..(y + 1) * img.width * c];
        let at = |x: i64, ch: usize| row[(x.clamp(0, w - 1) as usize) * c + ch] as u32;
        for x in 0..w {
            for ch in 0..c {
                let window: u32 = (x - r..=x + r).map(|i| at(i, ch)).sum();
                let bulk = window * ww + (at(x - r - 1, ch) + at(x + r + 1, ch)) * fw;
                out[(y * img.width + x as usize) * c + ch] = ((bulk + (1 << 23)) >> 24) as u8;
            }
        }
    }
    Image::new(img.width, img.height, c, out)
}

fn transpose(img: &Image) -> Image {
    let c = img.channels;
    let mut out = vec![0u8; img.data.len()];
    for y in 0..img.height {
        for x in 0..img.width {
            for ch in 0..c {
                out[(x * img.height + y) * c + ch] = img.data[(y * img.width + x) * c + ch];
            }
        }
    }
    Image::new(img.height, img.width, c, out)
}

/// PIL's `ImageFilter.GaussianBlur(radius)`: three extended box blurs per direction whose
/// combined variance is `radius^2` (Gwosdek et al. 2011), as DINO's `GaussianBlur` applies.
pub fn gaussian_blur_pil(img: &Image, radius: f32) -> Image {
    if radius == 0.0 {
        return img.clone();
    }
    let passes = 3.0f32;
    let sigma2 = radius * radius / passes;
    let l_big = (12.0 * sigma2 + 1.0).sqrt();
    let l = ((l_big - 1.0) / 2.0).floor();
    let a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2) / (6.0 * (sigma2 - (l + 1.0) * (l + 1.0)));
    let box_r = l + a;
    let mut cur = img.clone();
    for _ in 0..3 {
        cur = box_blur_rows(&cur, box_r);
    }
    let mut t = transpose(&cur);
    for _ in 0..3 {
        t = box_blur_rows(&t, box_r);
    }
    transpose(&t)
}

/// torchvision's `GaussianBlur(kernel, sigma)` on a PIL image: a normalized `kernel x kernel`
/// Gaussian in f32, reflect padding, rounded half to even back to 8 bits.
pub fn gaussian_blur_kernel(img: &Image, kernel: usize, sigma: f32) -> Image {
    let half = (kernel as f32 - 1.0) / 2.0;
    let pdf: Vec<f32> = (0..kernel).map(|i| (-0.5 * ((i as f32 - half) / sigma).powi(2)).exp()).collect();
    let total: f32 = pdf.iter().sum();
    let k1: Vec<f32> = pdf.iter().map(|v| v / total).collect();
    let r = (kernel / 2) as i64;
    let (w, h, c) = (img.width as i64, img.height as i64, img.channels);
    let reflect = |i: i64, n: i64| -> usize {
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }).clamp(0, n - 1) as usize
    };
    let mut out = vec![0u8; img.data.len()];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let mut acc = 0f32;
                for (dy, ky) in k1.iter().enumerate() {
                    let sy = reflect(y + dy as i64 - r, h);
                    for (dx, kx) in k1.iter().enumerate() {
                        let sx = reflect(x + dx as i64 - r, w);
                        acc += (ky * kx) * img.data[(sy * img.width + sx) * c + ch] as f32;
                    }
                }
                out[(y as usize * img.width + x as usize) * c + ch] = acc.round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Image::new(img.width, img.height, c, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image::luma;

    #[test]
    fn luma_matches_pil_weights() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }

    #[test]
    fn hsv_round_trip_of_grays_and_primaries() {
        for (r, g, b) in [(10u8, 10u8, 10u8), (255, 0, 0), (0, 255, 0), (0, 0, 255)] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            assert_eq!(hsv_to_rgb(h, s, v), [r, g, b]);
        }
    }

    #[test]
    fn resize_to_same_size_is_identity_and_constant_stays_constant() {
        let img = Image::new(3, 2, 1, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(resize_bicubic(&img, 3, 2), img);
        let flat = Image::filled(7, 5, 3, 77);
        assert_eq!(resize_bicubic(&flat, 12, 12), Image::filled(12, 12, 3, 77));
        assert_eq!(resize_bicubic(&flat, 2, 3), Image::filled(2, 3, 3, 77));
    }
}
