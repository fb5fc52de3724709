//! Evaluation of trained backbones: features of whole images and weighted k-NN.
pub mod attention;
pub mod features;
pub mod knn;
pub mod linear;
pub mod vit_runner;

pub use features::{Extractor, Features, Weights};
pub use knn::{weighted_knn, KnnResult};
pub use vit_runner::{Output, VitRunner};
