//! The emergent self-attention of DINO's last block: per-head [CLS] attention over the
//! patches, heat-map overlays, the masks that keep 60% of the attention mass (the reference's
//! `visualize_attention.py` threshold), and the Jaccard index of such masks with an object's
//! foreground (the measurable form of the paper's segmentation claim).
use std::path::Path;

use dino_runtime::data::{pil, Image};
use dino_runtime::{Error, Result};
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

/// The reference's mass threshold.
pub const THRESHOLD: f32 = 0.6;

/// The [CLS] attention maps of one image: `heads` maps of `gh x gw` patches.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMaps {
    pub heads: Vec<Vec<f32>>,
    pub gh: usize,
    pub gw: usize,
    pub patch: usize,
}

impl AttentionMaps {
    /// From the last block's attention weights of one image, `(H, t, t)`,
    /// `t = 1 + registers + gh * gw`: the [CLS] row's columns of the patches (the registers'
    /// columns are left out).
    pub fn from_weights(attn: &[f32], gh: usize, gw: usize, patch: usize, registers: usize) -> AttentionMaps {
        let t = gh * gw + 1 + registers;
        let h = attn.len() / (t * t);
        assert_eq!(h * t * t, attn.len(), "(H, t, t) attention weights");
        let heads = (0..h).map(|i| attn[i * t * t + 1 + registers..i * t * t + t].to_vec()).collect();
        AttentionMaps { heads, gh, gw, patch }
    }

    /// The mean over heads.
    pub fn mean(&self) -> Vec<f32> {
        let n = self.heads.len() as f32;
        (0..self.gh * self.gw).map(|j| self.heads.iter().map(|h| h[j]).sum::<f32>() / n).collect()
    }
}

/// The smallest set of patches holding `mass` of the attention (DINO: sort, normalize,
/// cumulative sum, keep what lies above `1 - mass`).
pub fn mass_mask(map: &[f32], mass: f32) -> Vec<bool> {
    let total: f32 = map.iter().sum();
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|a, b| map[*a].total_cmp(&map[*b]));
    let mut keep = vec![false; map.len()];
    let mut cum = 0.0;
    for i in order {
        cum += map[i] / total;
        keep[i] = cum > 1.0 - mass;
    }
    keep
}

/// Nearest-neighbour upsampling of a `gh x gw` grid by `patch` (as the reference does).
pub fn upsample<T: Copy>(grid: &[T], gh: usize, gw: usize, patch: usize) -> Vec<T> {
    let (h, w) = (gh * patch, gw * patch);
    (0..h * w).map(|i| grid[(i / w / patch) * gw + (i % w) / patch]).collect()
}

/// Jaccard index (intersection over union) of two masks; 1 when both are empty.
pub fn jaccard(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// A heat map over a (grayscale copy of the) image: the map, min-max normalized, through the
/// viridis colormap, blended half and half with the image. `base` is `h x w`, the map covers
/// it after upsampling.
pub fn overlay(base: &Image, map: &[f32], gh: usize, gw: usize, patch: usize) -> Image {
    let up = upsample(map, gh, gw, patch);
    let (lo, hi) = up.iter().fold((f32::MAX, f32::MIN), |a, v| (a.0.min(*v), a.1.max(*v)));
    let gray = base.to_luma();
    let mut data = Vec::with_capacity(up.len() * 3);
    for (i, v) in up.iter().enumerate() {
        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
        let c = ViridisRGB::get_color(t);
        let g = gray.data[i] as f32;
        for ch in [c.0, c.1, c.2] {
            data.push((0.45 * g + 0.55 * ch as f32).round() as u8);
        }
    }
    Image::new(gray.width, gray.height, 3, data)
}

/// A mask drawn over the image: kept pixels as they are, the rest darkened.
pub fn masked(base: &Image, keep: &[bool]) -> Image {
    let rgb = base.with_channels(3);
    let data =
        rgb.data.chunks(3).zip(keep).flat_map(|(p, k)| p.iter().map(move |v| if *k { *v } else { v / 4 })).collect();
    Image::new(rgb.width, rgb.height, 3, data)
}

/// Nearest-neighbour upscaling of a whole image by an integer factor (small images shown
/// big).
pub fn enlarge(img: &Image, f: usize) -> Image {
    if f == 1 {
        return img.clone();
    }
    pil::resize_nearest(img, img.width * f, img.height * f)
}

/// Tiles side by side, each under its title, written as one PNG.
pub fn grid(path: &Path, tiles: &[(String, Image)], columns: usize) -> Result<()> {
    let err = |e: String| Error::Format { path: path.to_path_buf(), why: format!("cannot draw the figure: {e}") };
    let (tw, th) =
        (tiles.iter().map(|t| t.1.width).max().unwrap_or(1), tiles.iter().map(|t| t.1.height).max().unwrap_or(1));
    let title = 26;
    let cols = columns.min(tiles.len()).max(1);
    let rows = tiles.len().div_ceil(cols);
    let (w, h) = (cols * (tw + 8) + 8, rows * (th + title + 8) + 8);
    let mut buf = vec![255u8; w * h * 3];
    for (k, (_, img)) in tiles.iter().enumerate() {
        let rgb = img.with_channels(3);
        let (x0, y0) = (8 + (k % cols) * (tw + 8), 8 + (k / cols) * (th + title + 8) + title);
        for y in 0..rgb.height {
            let dst = ((y0 + y) * w + x0) * 3;
            buf[dst..dst + rgb.width * 3].copy_from_slice(&rgb.data[y * rgb.width * 3..(y + 1) * rgb.width * 3]);
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
        let style = TextStyle::from((crate::plot::font(), 18).into_font()).color(&BLACK);
        for (k, (name, _)) in tiles.iter().enumerate() {
            let (x0, y0) = (8 + (k % cols) * (tw + 8), 8 + (k / cols) * (th + title + 8));
            root.draw_text(name, &style, (x0 as i32, y0 as i32 + 2)).map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Image::new(w, h, 3, buf).save_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mass_mask_keeps_the_largest_values_holding_the_mass() {
        let m = [0.05, 0.5, 0.1, 0.3, 0.05];
        // sorted descending: 0.5 (0.5), 0.3 (0.8): 0.6 of the mass needs both
        assert_eq!(mass_mask(&m, 0.6), [false, true, false, true, false]);
        assert_eq!(mass_mask(&m, 0.4), [false, true, false, false, false]);
        assert!(mass_mask(&m, 1.0).iter().all(|k| *k));
        // the scale of the map does not matter
        let scaled: Vec<f32> = m.iter().map(|v| v * 7.0).collect();
        assert_eq!(mass_mask(&scaled, 0.6), mass_mask(&m, 0.6));
    }

    #[test]
    fn jaccard_and_upsampling() {
        assert_eq!(jaccard(&[true, true, false, false], &[true, false, true, false]), 1.0 / 3.0);
        assert_eq!(jaccard(&[false; 3], &[false; 3]), 1.0);
        assert_eq!(upsample(&[1, 2, 3, 4], 2, 2, 2), [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
    }

    #[test]
    fn maps_from_attention_weights_take_the_cls_row() {
        // 2 heads, 2x1 grid: t = 3
        let w: Vec<f32> = (0..18).map(|v| v as f32).collect();
        let m = AttentionMaps::from_weights(&w, 2, 1, 4, 0);
        assert_eq!(m.heads, vec![vec![1.0, 2.0], vec![10.0, 11.0]]);
        assert_eq!(m.mean(), [5.5, 6.5]);
        // with 2 registers after [CLS]: t = 5, the patches are columns 3 and 4
        let w: Vec<f32> = (0..50).map(|v| v as f32).collect();
        let m = AttentionMaps::from_weights(&w, 2, 1, 4, 2);
        assert_eq!(m.heads, vec![vec![3.0, 4.0], vec![28.0, 29.0]]);
    }
}
