//! DINO's multi-crop augmentation (`DataAugmentationDINO`): two global views and N local
//! views of each image, each a RandomResizedCrop (bicubic) followed by flip, color jitter,
//! grayscale, Gaussian blur (and solarization on global view 2), then normalization.
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::image::Image;
use super::pil;
use crate::config::{AugmentConfig, CropConfig};

/// torchvision's `RandomResizedCrop.get_params`: `(top, left, height, width)` of a crop
/// whose area is a `scale` fraction of the image and whose aspect ratio is in [3/4, 4/3]
/// (log-uniform); 10 tries, then a central crop with the ratio clamped.
pub fn random_resized_crop_params(
    rng: &mut ChaCha8Rng,
    height: usize,
    width: usize,
    scale: (f64, f64),
) -> (usize, usize, usize, usize) {
    let (h_img, w_img) = (height as f64, width as f64);
    let area = h_img * w_img;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(scale.0..scale.1.max(scale.0 + f64::EPSILON));
        let ratio = rng.gen_range(lo..hi).exp();
        let w = (target * ratio).sqrt().round_ties_even() as usize;
        let h = (target / ratio).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    let in_ratio = w_img / h_img;
    let (w, h) = if in_ratio < 3.0 / 4.0 {
        (width, (w_img / (3.0 / 4.0)).round_ties_even() as usize)
    } else if in_ratio > 4.0 / 3.0 {
        (((h_img * (4.0 / 3.0)).round_ties_even()) as usize, height)
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// The 8-bit threshold of a solarization declared on the [0, 1] scale (0.5 is PIL's 128).
pub fn solarize_threshold(t: f64) -> u8 {
    (t * 256.0).round().min(255.0) as u8
}

/// The random operations one view went through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// `(top, left, height, width)` of the crop.
    pub crop: (usize, usize, usize, usize),
    pub flip: bool,
    pub jitter: bool,
    pub grayscale: bool,
    /// The blur's sigma (radius for PIL's blur).
    pub blur: Option<f32>,
    pub solarize: bool,
}

/// Which view a crop is: the blur probability and solarization differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Global1,
    Global2,
    Local,
}

/// The augmentation of one view.
#[derive(Debug, Clone)]
pub struct ViewTransform {
    pub view: View,
    pub size: usize,
    pub scale: (f64, f64),
    pub aug: AugmentConfig,
}

impl ViewTransform {
    /// Apply to an 8-bit image, drawing every random choice from `rng`.
    pub fn apply_u8(&self, img: &Image, rng: &mut ChaCha8Rng) -> Image {
        self.apply_traced(img, rng).0
    }

    /// [`apply_u8`](Self::apply_u8), also returning which random operations were applied.
    pub fn apply_traced(&self, img: &Image, rng: &mut ChaCha8Rng) -> (Image, Applied) {
        let a = &self.aug;
        let mut done = Applied::default();
        let (top, left, h, w) = random_resized_crop_params(rng, img.height, img.width, self.scale);
        done.crop = (top, left, h, w);
        let mut x = pil::resize_bicubic(&pil::crop(img, top, left, h, w), self.size, self.size);
        if rng.gen::<f64>() < a.flip {
            x = pil::hflip(&x);
            done.flip = true;
        }
        if let Some((s, p)) = a.color_jitter {
            if rng.gen::<f64>() < p {
                x = color_jitter(&x, s, rng);
                done.jitter = true;
            }
        }
        if rng.gen::<f64>() < a.grayscale {
            x = pil::grayscale(&x);
            done.grayscale = true;
        }
        if let Some(((lo, hi), probs, kernel)) = a.blur {
            let p = match self.view {
                View::Global1 => probs[0],
                View::Global2 => probs[1],
                View::Local => probs[2],
            };
            if rng.gen::<f64>() < p {
                let sigma = rng.gen_range(lo..=hi) as f32;
                x = if kernel > 0 {
                    pil::gaussian_blur_kernel(&x, kernel, sigma)
                } else {
                    pil::gaussian_blur_pil(&x, sigma)
                };
                done.blur = Some(sigma);
            }
        }
        if self.view == View::Global2 {
            if let Some((threshold, p)) = a.solarize {
                if rng.gen::<f64>() < p {
                    x = pil::solarize(&x, solarize_threshold(threshold));
                    done.solarize = true;
                }
            }
        }
        (x, done)
    }

    /// `ToTensor` and `Normalize`: CHW floats written into `out` (`channels * size * size`).
    pub fn normalize_into(&self, img: &Image, out: &mut [f32]) {
        let (c, n) = (img.channels, img.width * img.height);
        for ch in 0..c {
            let (m, s) = (self.aug.mean[ch % self.aug.mean.len()] as f32, self.aug.std[ch % self.aug.std.len()] as f32);
            for i in 0..n {
                out[ch * n + i] = (img.data[i * c + ch] as f32 / 255.0 - m) / s;
            }
        }
    }
}

/// torchvision's `ColorJitter` on a PIL image: brightness, contrast, saturation and hue
/// factors drawn in `[1-s, 1+s]` (hue in `[-s, s]`), applied in a random order; a zero
/// strength skips its operation.
pub fn color_jitter(img: &Image, strengths: [f64; 4], rng: &mut ChaCha8Rng) -> Image {
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let factor = |rng: &mut ChaCha8Rng, s: f64| rng.gen_range((1.0 - s).max(0.0)..=1.0 + s) as f32;
    let factors: Vec<Option<f32>> = (0..4)
        .map(|i| {
            let s = strengths[i];
            (s > 0.0).then(|| if i == 3 { rng.gen_range(-s..=s) as f32 } else { factor(rng, s) })
        })
        .collect();
    let mut x = img.clone();
    for i in order {
        if let Some(f) = factors[i] {
            x = match i {
                0 => pil::brightness(&x, f),
                1 => pil::contrast(&x, f),
                2 => pil::saturation(&x, f),
                _ => pil::hue(&x, f),
            };
        }
    }
    x
}

/// The transforms of all views of an objective: global 1, global 2, then the locals.
#[derive(Debug, Clone)]
pub struct MultiCrop {
    pub views: Vec<ViewTransform>,
    pub global_size: usize,
    pub local_size: usize,
    pub locals: usize,
}

impl MultiCrop {
    pub fn new(global: CropConfig, local: Option<CropConfig>, aug: AugmentConfig) -> MultiCrop {
        let mut views = vec![
            ViewTransform { view: View::Global1, size: global.size, scale: global.scale, aug },
            ViewTransform { view: View::Global2, size: global.size, scale: global.scale, aug },
        ];
        let locals = local.map(|l| l.count).unwrap_or(0);
        if let Some(l) = local {
            views.extend((0..l.count).map(|_| ViewTransform { view: View::Local, size: l.size, scale: l.scale, aug }));
        }
        MultiCrop { views, global_size: global.size, local_size: local.map(|l| l.size).unwrap_or(0), locals }
    }
}

/// Evaluation preprocessing at `size` (no randomness): an image already `size x size` is
/// used as is; otherwise DINO's `Resize(256)` + `CenterCrop(224)` scaled to `size` (shorter
/// side resized to `size * 256 / 224`, bicubic, then the central square).
pub fn eval_view(img: &Image, size: usize) -> Image {
    if img.width == size && img.height == size {
        return img.clone();
    }
    let short = (size as f64 * 256.0 / 224.0).round() as usize;
    let (w, h) = if img.width <= img.height {
        (short, (short as f64 * img.height as f64 / img.width as f64) as usize)
    } else {
        ((short as f64 * img.width as f64 / img.height as f64) as usize, short)
    };
    let resized = pil::resize_bicubic(img, w.max(size), h.max(size));
    let top = ((resized.height - size) as f64 / 2.0).round() as usize;
    let left = ((resized.width - size) as f64 / 2.0).round() as usize;
    pil::crop(&resized, top, left, size, size)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn aug() -> AugmentConfig {
        AugmentConfig {
            flip: 0.5,
            color_jitter: Some(([0.4, 0.4, 0.2, 0.1], 0.8)),
            grayscale: 0.2,
            blur: Some(((0.1, 2.0), [1.0, 0.1, 0.5], 0)),
            solarize: Some((0.5, 0.2)),
            mean: crate::config::PerChannel::new(&[0.485, 0.456, 0.406]),
            std: crate::config::PerChannel::new(&[0.229, 0.224, 0.225]),
        }
    }

    fn noise(w: usize, h: usize, c: usize, seed: u64) -> Image {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Image::new(w, h, c, (0..w * h * c).map(|_| rng.gen()).collect())
    }

    /// `count` successes of `n` draws agree with probability `p` (within 4.5 sigma).
    fn assert_rate(what: &str, count: usize, n: usize, p: f64) {
        let sigma = (n as f64 * p * (1.0 - p)).sqrt().max(0.5);
        let dev = (count as f64 - n as f64 * p).abs();
        assert!(dev <= 4.5 * sigma, "{what}: {count} of {n}, expected about {:.0} (p = {p})", n as f64 * p);
    }

    #[test]
    fn random_resized_crop_respects_scale_and_ratio() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (h, w) = (80usize, 100usize);
        let mut fractions = vec![];
        for _ in 0..4000 {
            let (top, left, ch, cw) = random_resized_crop_params(&mut rng, h, w, (0.05, 0.4));
            assert!(top + ch <= h && left + cw <= w && ch > 0 && cw > 0);
            let frac = (ch * cw) as f64 / (h * w) as f64;
            // rounding each side moves the area by at most a side's length
            assert!((0.05 - 0.03..=0.4 + 0.03).contains(&frac), "area fraction {frac}");
            let ratio = cw as f64 / ch as f64;
            assert!((0.65..=1.5).contains(&ratio), "aspect ratio {ratio}");
            fractions.push(frac);
        }
        let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
        assert!((mean - 0.225).abs() < 0.01, "mean area fraction {mean}, uniform in (0.05, 0.4) gives 0.225");
    }

    #[test]
    fn random_resized_crop_edge_cases() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // a 1-pixel image, and extreme aspect ratios where every try fails: central fallback
        assert_eq!(random_resized_crop_params(&mut rng, 1, 1, (0.4, 1.0)), (0, 0, 1, 1));
        let (top, left, h, w) = random_resized_crop_params(&mut rng, 2, 200, (0.9, 1.0));
        assert_eq!((top, h), (0, 2));
        assert!(w <= 3 && left == (200 - w) / 2, "width {w} left {left}");
        let (_, _, h, w) = random_resized_crop_params(&mut rng, 200, 2, (0.9, 1.0));
        assert!(w == 2 && h <= 3);
        // a degenerate scale range (lo == hi) still works
        let (_, _, h, w) = random_resized_crop_params(&mut rng, 50, 50, (1.0, 1.0));
        assert!(h * w >= 2000);
        // tiny inputs upsample to the crop size
        let t = ViewTransform { view: View::Local, size: 12, scale: (0.05, 0.4), aug: aug() };
        let out = t.apply_u8(&noise(1, 1, 3, 0), &mut rng);
        assert_eq!((out.width, out.height, out.channels), (12, 12, 3));
        let out = t.apply_u8(&noise(3, 700, 1, 0), &mut rng);
        assert_eq!((out.width, out.height, out.channels), (12, 12, 1));
    }

    #[test]
    fn each_view_applies_its_operations_with_the_declared_probabilities() {
        let crops = MultiCrop::new(
            CropConfig { count: 2, size: 16, scale: (0.4, 1.0) },
            Some(CropConfig { count: 3, size: 8, scale: (0.05, 0.4) }),
            aug(),
        );
        assert_eq!(
            crops.views.iter().map(|v| v.view).collect::<Vec<_>>(),
            [View::Global1, View::Global2, View::Local, View::Local, View::Local]
        );
        let img = noise(24, 20, 3, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let n = 1500;
        for (v, blur_p, solarize_p) in [(0, 1.0, 0.0), (1, 0.1, 0.2), (2, 0.5, 0.0)] {
            let t = &crops.views[v];
            let mut counts = [0usize; 5];
            for _ in 0..n {
                let (out, done) = t.apply_traced(&img, &mut rng);
                assert_eq!((out.width, out.height), (t.size, t.size));
                counts[0] += done.flip as usize;
                counts[1] += done.jitter as usize;
                counts[2] += done.grayscale as usize;
                if let Some(s) = done.blur {
                    assert!((0.1..=2.0).contains(&s), "sigma {s}");
                    counts[3] += 1;
                }
                counts[4] += done.solarize as usize;
            }
            let view = format!("{:?}", t.view);
            assert_rate(&format!("{view} flip"), counts[0], n, 0.5);
            assert_rate(&format!("{view} jitter"), counts[1], n, 0.8);
            assert_rate(&format!("{view} grayscale"), counts[2], n, 0.2);
            assert_rate(&format!("{view} blur"), counts[3], n, blur_p);
            assert_rate(&format!("{view} solarize"), counts[4], n, solarize_p);
        }
    }

    #[test]
    fn jitter_strengths_bound_the_change_and_zero_strengths_do_nothing() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let gray = Image::filled(6, 6, 1, 100);
        for _ in 0..200 {
            // brightness only: a constant image is scaled by a factor in [0.6, 1.4]
            let out = color_jitter(&gray, [0.4, 0.0, 0.0, 0.0], &mut rng);
            assert!((60..=140).contains(&out.data[0]) && out.data.iter().all(|&v| v == out.data[0]));
            // contrast of a constant image, saturation and hue of grayscale: no change
            assert_eq!(color_jitter(&gray, [0.0, 0.4, 0.2, 0.1], &mut rng), gray);
        }
        assert_eq!(color_jitter(&gray, [0.0; 4], &mut rng), gray);
        // hue and saturation do change color images
        let rgb = noise(8, 8, 3, 6);
        assert_ne!(color_jitter(&rgb, [0.0, 0.0, 0.0, 0.1], &mut rng), rgb);
    }

    #[test]
    fn solarize_threshold_and_normalization() {
        assert_eq!(solarize_threshold(0.5), 128);
        assert_eq!(solarize_threshold(1.0), 255);
        let t = ViewTransform {
            view: View::Global1,
            size: 2,
            scale: (1.0, 1.0),
            aug: AugmentConfig {
                mean: crate::config::PerChannel::new(&[0.5, 0.25, 0.0]),
                std: crate::config::PerChannel::new(&[0.5, 0.25, 1.0]),
                ..aug()
            },
        };
        let img = Image::new(2, 1, 3, vec![255, 0, 51, 0, 255, 102]);
        let mut out = vec![0f32; 6];
        t.normalize_into(&img, &mut out);
        let want = [1.0, -1.0, -1.0, 3.0, 0.2, 0.4];
        for (g, w) in out.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn eval_view_keeps_native_images_and_center_crops_others() {
        let img = noise(28, 28, 1, 7);
        assert_eq!(eval_view(&img, 28), img);
        let wide = noise(64, 40, 3, 8);
        let out = eval_view(&wide, 28);
        assert_eq!((out.width, out.height, out.channels), (28, 28, 3));
        let tall = Image::filled(10, 30, 1, 77);
        assert!(eval_view(&tall, 28).data.iter().all(|&v| v == 77));
    }
}
