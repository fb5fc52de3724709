//! Evaluation of trained backbones: features of whole images and weighted k-NN.
pub mod attention;
pub mod features;
pub mod knn;
pub mod knn_eval;
pub mod linear;
pub mod preprocess;
pub mod vit_runner;

pub use features::{Extractor, Features, Weights};
pub use knn::{weighted_knn, KnnResult};
pub use vit_runner::{Output, VitRunner};

/// Test data: `n` points of 3 classes along 3 axes of a `dim`-d space (class `i % 3`, at
/// `scale` on its axis), plus uniform noise in `[-noise/2, noise/2)`; seeded.
#[cfg(test)]
pub(crate) fn planted_classes(n: usize, dim: usize, scale: f32, noise: f32, seed: u64) -> (Vec<f32>, Vec<usize>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::with_capacity(n * dim), Vec::with_capacity(n));
    for i in 0..n {
        let c = i % 3;
        for j in 0..dim {
            x.push(if j == c { scale } else { 0.0 } + noise * (rng.gen::<f32>() - 0.5));
        }
        y.push(c);
    }
    (x, y)
}
