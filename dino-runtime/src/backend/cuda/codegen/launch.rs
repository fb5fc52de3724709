//! How a generated kernel is launched, and the thresholds that choose its shape.

/// How a kernel is launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// One thread per element: `total` elements.
    Flat { total: usize },
    /// One block per row: `rows` rows of `row_len` elements; with `split` > 1, each row's
    /// sum is shared by `split` blocks adding their parts atomically into an output zeroed
    /// first (`zero` floats). With `warp`, one warp per row instead (8 rows per block of 256
    /// threads): short rows, warp-shuffle reductions only.
    Rows { rows: usize, row_len: usize, split: usize, zero: usize, warp: bool },
}

/// Rows of at most this many elements, when there are many rows, get a warp each.
pub(super) const WARP_ROW_MAX: usize = 1024;

/// How far a reduction is spread over blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Blocks a split reduction aims for (a few per multiprocessor of a big GPU).
    pub target_blocks: usize,
    /// Elements each block of a split reduction reads at least.
    pub min_block_work: usize,
    /// 64-bit indices even where 32 bits hold every index (to test that path).
    pub wide_indices: bool,
    /// Rows of at most 1024 elements get a warp each when there are at least this many.
    pub warp_rows_min: usize,
    /// Elements of the row each block of an outer reduction owns.
    pub outer_tile: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning { target_blocks: 1024, min_block_work: 4096, wide_indices: false, warp_rows_min: 1024, outer_tile: 256 }
    }
}

impl Tuning {
    /// Every special path taken even on tiny kernels: sums split over blocks, warp rows,
    /// outer reductions tiled, 64-bit indices (for tests).
    pub fn exercise_all() -> Tuning {
        Tuning { target_blocks: 64, min_block_work: 2, wide_indices: true, warp_rows_min: 1, outer_tile: 8 }
    }
}

/// A kernel's source and launch shape.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelSource {
    pub name: String,
    /// The kernel alone; prepend [`CUDA_PRELUDE`](super::CUDA_PRELUDE) (once per module) to
    /// compile it.
    pub code: String,
    pub launch: Launch,
    pub n_inputs: usize,
}

impl Launch {
    /// Grid and block sizes for a device with `sms` multiprocessors.
    pub fn grid_block(&self, sms: usize) -> (u32, u32) {
        match *self {
            Launch::Flat { total } => {
                let block = 256usize;
                let grid = total.div_ceil(block).clamp(1, sms * 32);
                (grid as u32, block as u32)
            }
            Launch::Rows { rows, warp: true, .. } => (rows.div_ceil(8).clamp(1, 65535 * 8) as u32, 256),
            Launch::Rows { rows, row_len, split, .. } => {
                // a warp per 32 elements of the row, at most 1024 threads
                let block = (row_len.div_ceil(32) * 32).clamp(32, 1024);
                ((rows * split).clamp(1, 65535 * 8) as u32, block as u32)
            }
        }
    }
}
