//! Evaluation of trained backbones: features of whole images and weighted k-NN.
pub mod features;
pub mod knn;

pub use features::{Extractor, Features, Weights};
pub use knn::{weighted_knn, KnnResult};
