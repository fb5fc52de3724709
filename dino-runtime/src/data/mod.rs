//! Data: decoding, datasets (Fashion-MNIST IDX files, image folders), DINO's multi-crop
//! augmentation with PIL's pixel arithmetic, and a seeded, parallel, prefetching loader.
//!
//! A dataset never stops a run on one bad file: [`Dataset::load`] returns the error naming
//! the file, and the loader reports it once, counts it and uses the next readable image.
pub mod folder;
pub mod idx;
pub mod image;
pub mod loader;
pub mod masking;
pub mod multicrop;
pub mod pil;

pub use self::image::Image;
pub use folder::ImageFolder;
pub use idx::{fashion_mnist, Fmnist, IdxImages};
pub use loader::{BadImage, Batch, Loader};
pub use multicrop::{MultiCrop, View, ViewTransform};

use crate::error::Result;

/// A finite, indexable set of images with optional labels.
pub trait Dataset: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Decode image `index` (with the dataset's channel count); an error names the file.
    fn load(&self, index: usize) -> Result<Image>;
    /// Class of image `index`, when the dataset is labeled.
    fn label(&self, index: usize) -> Option<usize>;
    /// Class names (empty when unlabeled).
    fn classes(&self) -> &[String];
    /// Where image `index` comes from, for messages (a path, or `file[index]`).
    fn source(&self, index: usize) -> String;
}
