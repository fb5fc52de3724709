//! Preprocessing of whole images for evaluation: the normalization a model was trained with,
//! and 8-bit images as normalized CHW floats.
use dino_runtime::data::Image;

use crate::models;

/// Mean and std of the preset's normalization (ImageNet's for bare backbones).
pub fn normalization(name: &str) -> (Vec<f64>, Vec<f64>) {
    match models::find(name).map(|e| e.preset) {
        Some(models::Preset::Dino(c)) => (c.augment.mean.to_vec(), c.augment.std.to_vec()),
        _ => (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
    }
}

/// CHW floats of an 8-bit image.
pub fn normalize(img: &Image, mean: &[f64], std: &[f64]) -> Vec<f32> {
    let (c, n) = (img.channels, img.width * img.height);
    let mut out = vec![0f32; c * n];
    for ch in 0..c {
        let (m, s) = (mean[ch % mean.len()] as f32, std[ch % std.len()] as f32);
        for i in 0..n {
            out[ch * n + i] = (img.data[i * c + ch] as f32 / 255.0 - m) / s;
        }
    }
    out
}
