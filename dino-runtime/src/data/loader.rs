//! The training loader: a per-epoch permutation, DINO's multi-crop views of each image
//! assembled in parallel (rayon) into the step's view-major inputs, prefetched on a thread
//! while the step runs.
//!
//! Reproducible by construction: the permutation depends on `(seed, epoch)` and every random
//! choice of an image's views on `(seed, epoch, position in the epoch)`, so a batch is the
//! same whatever the thread count, and a resumed run sees exactly the batches an
//! uninterrupted one would.
//!
//! In a data-parallel run each rank takes a disjoint shard of every global batch (rank `r` of
//! `N` the `r`-th slice of `batch / N` images, [`Loader::shard`]): the ranks together see
//! exactly the images and views a 1-rank run of the same global batch sees, step by step, and
//! the last partial global batch of an epoch is dropped on every rank (DDP's
//! `DistributedSampler` with `drop_last`).
use std::collections::BTreeSet;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::image::Image;
use super::multicrop::MultiCrop;
use super::Dataset;
use crate::error::{Error, Result};

/// SplitMix64's finalizer: decorrelates consecutive seeds.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for stream `what` at `(a, b)` of run `seed`.
pub fn derive_seed(seed: u64, what: u64, a: u64, b: u64) -> u64 {
    mix(mix(mix(seed ^ mix(what)) ^ a) ^ b)
}

const STREAM_ORDER: u64 = 1;
const STREAM_VIEWS: u64 = 2;

/// An image that could not be read (reported once, then replaced by the next readable one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadImage {
    pub index: usize,
    pub source: String,
    pub why: String,
}

/// The inputs of one step: `global` is `(2 * batch, C, G, G)` (all first views, then all
/// second views), `local` is `(locals * batch, C, L, L)` view by view.
#[derive(Debug, Clone)]
pub struct Batch {
    pub epoch: usize,
    pub step: usize,
    /// Dataset indices of the images (after replacing unreadable ones).
    pub indices: Vec<usize>,
    pub global: Vec<f32>,
    pub local: Vec<f32>,
}

#[derive(Default)]
struct BadLog {
    known: BTreeSet<usize>,
    unreported: Vec<BadImage>,
}

/// See the module documentation.
pub struct Loader {
    pub dataset: Arc<dyn Dataset>,
    pub crops: MultiCrop,
    /// Images per step over all ranks (the global batch).
    pub batch: usize,
    pub seed: u64,
    pub channels: usize,
    /// This rank and the number of ranks (`(0, 1)`: the whole batch).
    pub rank: usize,
    pub ranks: usize,
    bad: Mutex<BadLog>,
}

impl Loader {
    /// Batches of `batch` images (the last partial batch of an epoch is dropped, as DINO's
    /// loader does).
    pub fn new(
        dataset: Arc<dyn Dataset>,
        crops: MultiCrop,
        channels: usize,
        batch: usize,
        seed: u64,
    ) -> Result<Loader> {
        if batch == 0 || dataset.len() < batch {
            return Err(Error::Config {
                what: "batch size".into(),
                why: format!("{batch} images per step, the dataset has {}", dataset.len()),
            });
        }
        Ok(Loader { dataset, crops, batch, seed, channels, rank: 0, ranks: 1, bad: Mutex::new(BadLog::default()) })
    }

    /// Rank `rank` of `ranks`: this rank's slice of each global batch only. The global batch
    /// must divide evenly.
    pub fn shard(mut self, rank: usize, ranks: usize) -> Result<Loader> {
        if ranks == 0 || rank >= ranks || self.batch % ranks != 0 {
            return Err(Error::Config {
                what: format!("batch size {} over {ranks} ranks", self.batch),
                why: format!(
                    "the global batch must be a multiple of the number of ranks ({ranks}), rank {rank} < {ranks}"
                ),
            });
        }
        self.rank = rank;
        self.ranks = ranks;
        Ok(self)
    }

    /// Images per step on this rank.
    pub fn local_batch(&self) -> usize {
        self.batch / self.ranks
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.dataset.len() / self.batch
    }

    /// The order of the images in `epoch`.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(self.seed, STREAM_ORDER, epoch as u64, 0)));
        order
    }

    /// Image `index`, or the next readable one after it (reporting each unreadable file once).
    fn load_readable(&self, index: usize) -> Result<(usize, Image)> {
        let n = self.dataset.len();
        for k in 0..n {
            let i = (index + k) % n;
            if self.bad.lock().unwrap().known.contains(&i) {
                continue;
            }
            match self.dataset.load(i) {
                Ok(img) if img.width > 0 && img.height > 0 => return Ok((i, img.with_channels(self.channels))),
                Ok(_) => self.report(i, "an empty (0-pixel) image".into()),
                Err(e) => self.report(i, e.to_string()),
            }
        }
        Err(Error::Config { what: "dataset".into(), why: format!("none of its {n} images can be read") })
    }

    fn report(&self, index: usize, why: String) {
        let mut bad = self.bad.lock().unwrap();
        if bad.known.insert(index) {
            bad.unreported.push(BadImage { index, source: self.dataset.source(index), why });
        }
    }

    /// Unreadable images found since the last call.
    pub fn take_bad(&self) -> Vec<BadImage> {
        std::mem::take(&mut self.bad.lock().unwrap().unreported)
    }

    /// Unreadable images found so far.
    pub fn bad_count(&self) -> usize {
        self.bad.lock().unwrap().known.len()
    }

    /// This rank's share of batch `step` of `epoch` given the epoch's `order`.
    pub fn batch_of(&self, order: &[usize], epoch: usize, step: usize) -> Result<Batch> {
        let (b, c, views) = (self.local_batch(), self.channels, &self.crops.views);
        let (g, l) = (self.crops.global_size, self.crops.local_size);
        let first = step * self.batch + self.rank * b;
        let per_image: Vec<Result<(usize, Vec<Vec<f32>>)>> = (0..b)
            .into_par_iter()
            .map(|j| {
                let pos = first + j;
                let (index, img) = self.load_readable(order[pos])?;
                let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, STREAM_VIEWS, epoch as u64, pos as u64));
                let tensors = views
                    .iter()
                    .map(|v| {
                        let x = v.apply_u8(&img, &mut rng);
                        let mut out = vec![0f32; c * v.size * v.size];
                        v.normalize_into(&x, &mut out);
                        out
                    })
                    .collect();
                Ok((index, tensors))
            })
            .collect();
        let mut global = vec![0f32; 2 * b * c * g * g];
        let mut local = vec![0f32; self.crops.locals * b * c * l * l];
        let mut indices = Vec::with_capacity(b);
        for (j, r) in per_image.into_iter().enumerate() {
            let (index, tensors) = r?;
            indices.push(index);
            for (v, t) in tensors.iter().enumerate() {
                let (buf, row) = if v < 2 { (&mut global, v * b + j) } else { (&mut local, (v - 2) * b + j) };
                buf[row * t.len()..(row + 1) * t.len()].copy_from_slice(t);
            }
        }
        Ok(Batch { epoch, step, indices, global, local })
    }

    /// The batches of `epoch` from `from_step` on, made on a background thread at most two
    /// steps ahead of the consumer.
    pub fn epoch(self: &Arc<Self>, epoch: usize, from_step: usize) -> Prefetch {
        let (tx, rx) = sync_channel(2);
        let me = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name(format!("dino-loader-{epoch}"))
            .spawn(move || {
                let order = me.order(epoch);
                for step in from_step..me.steps_per_epoch() {
                    if tx.send(me.batch_of(&order, epoch, step)).is_err() {
                        break; // the consumer stopped
                    }
                }
            })
            .expect("spawn the loader thread");
        Prefetch { rx: Some(rx), handle: Some(handle) }
    }
}

/// Batches produced ahead by [`Loader::epoch`].
pub struct Prefetch {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for Prefetch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.rx = None; // unblocks the producer
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AugmentConfig, CropConfig};

    /// Images `i` of constant value `i`, some of them unreadable.
    struct Fake {
        n: usize,
        broken: Vec<usize>,
    }

    impl Dataset for Fake {
        fn len(&self) -> usize {
            self.n
        }
        fn load(&self, i: usize) -> Result<Image> {
            if self.broken.contains(&i) {
                return Err(Error::Format { path: format!("img{i}.png").into(), why: "corrupt".into() });
            }
            Ok(Image::filled(10, 8, 1, i as u8))
        }
        fn label(&self, _: usize) -> Option<usize> {
            None
        }
        fn classes(&self) -> &[String] {
            &[]
        }
        fn source(&self, i: usize) -> String {
            format!("img{i}.png")
        }
    }

    fn plain() -> AugmentConfig {
        AugmentConfig::flip_only(crate::config::PerChannel::new(&[0.0]), crate::config::PerChannel::new(&[1.0 / 255.0]))
    }

    fn loader(n: usize, broken: Vec<usize>, seed: u64) -> Arc<Loader> {
        let crops = MultiCrop::new(
            CropConfig { count: 2, size: 6, scale: (0.4, 1.0) },
            Some(CropConfig { count: 3, size: 4, scale: (0.05, 0.4) }),
            plain(),
        );
        Arc::new(Loader::new(Arc::new(Fake { n, broken }), crops, 1, 4, seed).unwrap())
    }

    #[test]
    fn layout_is_view_major_and_values_follow_the_image() {
        let l = loader(9, vec![], 3);
        assert_eq!(l.steps_per_epoch(), 2);
        let order = l.order(0);
        let b = l.batch_of(&order, 0, 1).unwrap();
        assert_eq!(b.indices, order[4..8].to_vec());
        assert_eq!((b.global.len(), b.local.len()), (2 * 4 * 36, 3 * 4 * 16));
        // constant images stay constant under crop/resize/flip: each row holds its image's value
        for v in 0..2 {
            for j in 0..4 {
                let row = &b.global[(v * 4 + j) * 36..(v * 4 + j + 1) * 36];
                assert!(row.iter().all(|&x| (x - b.indices[j] as f32).abs() < 1e-3), "global view {v} image {j}");
            }
        }
        for v in 0..3 {
            for j in 0..4 {
                let row = &b.local[(v * 4 + j) * 16..(v * 4 + j + 1) * 16];
                assert!(row.iter().all(|&x| (x - b.indices[j] as f32).abs() < 1e-3), "local view {v} image {j}");
            }
        }
    }

    #[test]
    fn seeded_reproducible_and_different_across_epochs_and_seeds() {
        let a = loader(40, vec![], 7);
        let b = loader(40, vec![], 7);
        let c = loader(40, vec![], 8);
        assert_eq!(a.order(0), b.order(0));
        assert_ne!(a.order(0), a.order(1));
        assert_ne!(a.order(0), c.order(0));
        let mut perm = a.order(2);
        perm.sort();
        assert_eq!(perm, (0..40).collect::<Vec<_>>());
        // the prefetching iterator gives the same batches as direct calls, from any step
        let direct: Vec<Vec<f32>> = (3..10).map(|s| a.batch_of(&a.order(1), 1, s).unwrap().global).collect();
        let fetched: Vec<Vec<f32>> = a.epoch(1, 3).map(|r| r.unwrap().global).collect();
        assert_eq!(direct, fetched);
        // an abandoned epoch stops its thread
        let mut it = a.epoch(0, 0);
        it.next().unwrap().unwrap();
        drop(it);
    }

    /// The shards of the ranks are the global batch, split: the same images and views.
    #[test]
    fn shards_split_each_global_batch() {
        let whole = loader(17, vec![], 5);
        let parts: Vec<Loader> =
            (0..2).map(|r| Arc::try_unwrap(loader(17, vec![], 5)).ok().unwrap().shard(r, 2).unwrap()).collect();
        assert_eq!(parts[1].steps_per_epoch(), whole.steps_per_epoch());
        let order = whole.order(1);
        for step in 0..whole.steps_per_epoch() {
            let w = whole.batch_of(&order, 1, step).unwrap();
            let p: Vec<Batch> = parts.iter().map(|l| l.batch_of(&order, 1, step).unwrap()).collect();
            assert_eq!([&p[0].indices[..], &p[1].indices[..]].concat(), w.indices);
            // view-major: each view's rows are rank 0's then rank 1's
            let row = 36;
            for v in 0..2 {
                let want = &w.global[v * 4 * row..(v + 1) * 4 * row];
                let got = [&p[0].global[v * 2 * row..(v + 1) * 2 * row], &p[1].global[v * 2 * row..(v + 1) * 2 * row]]
                    .concat();
                assert_eq!(got, want, "step {step} view {v}");
            }
        }
        let e = Arc::try_unwrap(loader(17, vec![], 5)).ok().unwrap().shard(0, 3).err().unwrap().to_string();
        assert!(e.contains("multiple of the number of ranks (3)"), "{e}");
    }

    #[test]
    fn unreadable_images_are_reported_once_counted_and_replaced() {
        let l = loader(8, vec![2, 3], 0);
        let order: Vec<usize> = (0..8).collect();
        let b = l.batch_of(&order, 0, 0).unwrap();
        assert_eq!(b.indices, [0, 1, 4, 4]);
        let bad = l.take_bad();
        assert_eq!(bad.iter().map(|b| b.index).collect::<Vec<_>>(), [2, 3]);
        assert!(bad[0].source == "img2.png" && bad[0].why.contains("corrupt"));
        l.batch_of(&order, 0, 0).unwrap();
        assert!(l.take_bad().is_empty(), "reported once");
        assert_eq!(l.bad_count(), 2);
        // no readable image at all is an error, not a hang
        let none = loader(4, vec![0, 1, 2, 3], 0);
        let e = none.batch_of(&[0, 1, 2, 3], 0, 0).unwrap_err().to_string();
        assert!(e.contains("none of its 4 images"), "{e}");
    }
}
