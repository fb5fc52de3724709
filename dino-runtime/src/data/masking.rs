//! iBOT's block-wise masks over the patch grid of the global crops, as DINOv2 draws them
//! (`MaskingGenerator` and the masking part of `collate_data_and_cast`).
//!
//! One mask of `n` patches grows by rectangles: each try draws an area in
//! `[min_patches, room]` and a log-uniform aspect ratio in `[0.3, 1/0.3]`, places the
//! rectangle uniformly where it fits strictly inside the grid, and keeps it if it adds between
//! 1 and `room` new patches (10 tries per rectangle); rectangles are added until `n` patches
//! are masked or a rectangle cannot be placed. Over a batch of `G` global crops,
//! `floor(G * probability)` crops get masks whose sizes spread over the ratio range (crop `i`
//! draws its ratio in the `i`-th of equal sub-ranges), the others none, and the order is
//! shuffled.
use rand::seq::SliceRandom;
use rand::Rng;

/// The block-mask generator of one patch grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskGenerator {
    pub height: usize,
    pub width: usize,
    /// The smallest rectangle's area (DINOv2: 4).
    pub min_patches: usize,
    /// The most patches one rectangle may add (DINOv2: half the grid).
    pub max_patches: usize,
    /// `ln` of the aspect-ratio range (DINOv2: 0.3 to 1/0.3).
    pub log_aspect: (f64, f64),
}

impl MaskGenerator {
    /// DINOv2's generator for a `side x side` grid.
    pub fn dinov2(side: usize) -> Self {
        let aspect: f64 = 0.3;
        MaskGenerator {
            height: side,
            width: side,
            min_patches: 4,
            max_patches: side * side / 2,
            log_aspect: (aspect.ln(), (1.0 / aspect).ln()),
        }
    }

    pub fn patches(&self) -> usize {
        self.height * self.width
    }

    /// A mask (row-major over the grid) of about `n` patches: exactly `n` unless a rectangle
    /// cannot be placed first.
    pub fn mask(&self, n: usize, rng: &mut impl Rng) -> Vec<bool> {
        let mut mask = vec![false; self.patches()];
        let mut count = 0;
        while count < n {
            let room = (n - count).min(self.max_patches);
            let added = self.add_rectangle(&mut mask, room, rng);
            if added == 0 {
                break;
            }
            count += added;
        }
        mask
    }

    /// One rectangle adding between 1 and `room` patches, in up to 10 tries: the patches added.
    fn add_rectangle(&self, mask: &mut [bool], room: usize, rng: &mut impl Rng) -> usize {
        let (gh, gw) = (self.height, self.width);
        for _ in 0..10 {
            let area = uniform(rng, self.min_patches as f64, room as f64);
            let aspect = uniform(rng, self.log_aspect.0, self.log_aspect.1).exp();
            let h = (area * aspect).sqrt().round_ties_even() as usize;
            let w = (area / aspect).sqrt().round_ties_even() as usize;
            if w >= gw || h >= gh {
                continue;
            }
            let top = rng.gen_range(0..=gh - h);
            let left = rng.gen_range(0..=gw - w);
            let cells = || (top..top + h).flat_map(move |y| (left..left + w).map(move |x| y * gw + x));
            let new = cells().filter(|&i| !mask[i]).count();
            if new > 0 && new <= room {
                cells().for_each(|i| mask[i] = true);
                return new;
            }
        }
        0
    }
}

/// `U(a, b)` as Python's `random.uniform` (either order of the bounds).
fn uniform(rng: &mut impl Rng, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.gen::<f64>()
}

/// The global crops of a batch of `crops` that get a mask.
fn masked_crops(crops: usize, probability: f64) -> usize {
    ((crops as f64 * probability).floor() as usize).min(crops)
}

/// Edge `i` of the `masked` equal sub-ranges of `ratio`.
fn sub_range_edge(ratio: (f64, f64), masked: usize, i: usize) -> f64 {
    ratio.0 + (ratio.1 - ratio.0) * i as f64 / masked as f64
}

/// The most patches [`batch_masks`] can mask among any `crops` of a batch of `global` crops
/// (DINOv2's `upperbound`, for one rank's share): the sum of the `crops` largest per-crop
/// bounds `floor(patches * top of the crop's sub-range)`; at least 1.
pub fn masked_upper_bound(
    g: &MaskGenerator,
    global: usize,
    crops: usize,
    ratio: (f64, f64),
    probability: f64,
) -> usize {
    let masked = masked_crops(global, probability);
    let mut bounds: Vec<usize> =
        (0..masked).map(|i| (g.patches() as f64 * sub_range_edge(ratio, masked, i + 1)) as usize).collect();
    bounds.sort_unstable_by(|a, b| b.cmp(a));
    bounds.iter().take(crops).sum::<usize>().max(1)
}

/// The masks of `crops` global crops (row-major `crops x patches`, 1.0 where masked) and the
/// weight of each patch in the iBOT loss (`1 / masked patches of its crop` where masked, else
/// 0): `floor(crops * probability)` crops masked with ratios spread over `ratio`, shuffled.
pub fn batch_masks(
    g: &MaskGenerator,
    crops: usize,
    ratio: (f64, f64),
    probability: f64,
    rng: &mut impl Rng,
) -> (Vec<f32>, Vec<f32>) {
    let n = g.patches();
    let masked = masked_crops(crops, probability);
    let edge = |i: usize| sub_range_edge(ratio, masked, i);
    let mut all: Vec<Vec<bool>> = (0..masked)
        .map(|i| {
            let r = uniform(rng, edge(i), edge(i + 1));
            g.mask((n as f64 * r) as usize, rng)
        })
        .collect();
    all.resize(crops, vec![false; n]);
    all.shuffle(rng);
    let mut masks = Vec::with_capacity(crops * n);
    let mut weights = Vec::with_capacity(crops * n);
    for m in &all {
        let k = m.iter().filter(|&&b| b).count().max(1) as f32;
        masks.extend(m.iter().map(|&b| b as u8 as f32));
        weights.extend(m.iter().map(|&b| if b { 1.0 / k } else { 0.0 }));
    }
    (masks, weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Masks have the asked size when it can be reached, and are unions of rectangles: most
    /// masked patches have a masked neighbour (only the last rectangle, sized to the patches
    /// still missing, may be a single patch).
    #[test]
    fn masks_reach_their_size_in_blocks() {
        let g = MaskGenerator::dinov2(16);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for n in [0, 4, 26, 77, 128] {
            for _ in 0..20 {
                let m = g.mask(n, &mut rng);
                let count = m.iter().filter(|&&b| b).count();
                assert!(count <= n, "{count} > {n}");
                assert!(n < 26 || count * 10 >= n * 9, "{count} of {n}: too few");
                let near = m
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b)
                    .filter(|(i, _)| {
                        let (y, x) = ((i / 16) as i32, (i % 16) as i32);
                        [(0i32, 1i32), (0, -1), (1, 0), (-1, 0)].iter().any(|(dy, dx)| {
                            let (yy, xx) = (y + dy, x + dx);
                            (0..16).contains(&yy) && (0..16).contains(&xx) && m[(yy * 16 + xx) as usize]
                        })
                    })
                    .count();
                assert!(n < 26 || near * 10 >= count * 8, "{near} of {count} masked patches have a masked neighbour");
            }
        }
    }

    /// `floor(crops * p)` crops masked, ratios spread over the range, weights summing to 1 per
    /// masked crop; the same seed gives the same masks.
    #[test]
    fn batch_masks_follow_dinov2s_collate() {
        let g = MaskGenerator::dinov2(14);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (m, w) = batch_masks(&g, 20, (0.1, 0.5), 0.5, &mut rng);
        let n = g.patches();
        let rows: Vec<usize> = m.chunks(n).map(|r| r.iter().filter(|&&v| v > 0.0).count()).collect();
        assert_eq!(rows.iter().filter(|&&c| c > 0).count(), 10, "{rows:?}");
        assert!(rows.iter().all(|&c| c <= n / 2), "{rows:?}");
        assert!(rows.iter().any(|&c| c >= n * 4 / 10), "the largest sub-range reaches 40%: {rows:?}");
        for (r, ws) in w.chunks(n).enumerate() {
            let s: f32 = ws.iter().sum();
            assert!((s - (rows[r] > 0) as u8 as f32).abs() < 1e-5, "row {r}: weights sum to {s}");
        }
        let again = batch_masks(&g, 20, (0.1, 0.5), 0.5, &mut ChaCha8Rng::seed_from_u64(2));
        assert_eq!((m, w), again);
    }

    /// No draw masks more patches than the bound, over the whole batch or any rank's share of
    /// it (halves of each view, as ranks hold them).
    #[test]
    fn the_upper_bound_holds_for_every_draw_and_every_share() {
        let g = MaskGenerator::dinov2(4);
        let (crops, ratio, p) = (32, (0.1, 0.5), 0.5);
        let whole = masked_upper_bound(&g, crops, crops, ratio, p);
        let share = masked_upper_bound(&g, crops, crops / 2, ratio, p);
        let quarter = masked_upper_bound(&g, crops, crops / 4, ratio, p);
        assert!(quarter < share && share <= whole && whole < crops * 16, "{quarter} {share} {whole}");
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..200 {
            let (m, _) = batch_masks(&g, crops, ratio, p, &mut rng);
            let count = |rows: &[f32]| rows.iter().filter(|&&v| v > 0.0).count();
            assert!(count(&m) <= whole);
            let half = crops / 2 * 16;
            assert!(count(&m[..half]) <= share && count(&m[half..]) <= share);
        }
    }

    /// A grid too small for a 4-patch rectangle strictly inside it gets no mask (no endless
    /// loop).
    #[test]
    fn a_tiny_grid_gets_empty_masks() {
        let g = MaskGenerator::dinov2(2);
        let m = g.mask(2, &mut ChaCha8Rng::seed_from_u64(3));
        assert!(m.iter().all(|b| !b));
    }
}
