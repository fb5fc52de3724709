//! Image folders as torchvision's `ImageFolder` reads them: `root/<class>/**/<image>`,
//! classes sorted by name; or, for self-supervised training, images directly under `root`
//! (unlabeled).
use std::path::{Path, PathBuf};

use super::image::Image;
use super::Dataset;
use crate::error::{Error, Result};

/// Extensions read (case-insensitive), as torchvision's `IMG_EXTENSIONS` less the ones the
/// `image` crate cannot decode.
pub const EXTENSIONS: [&str; 10] = ["jpg", "jpeg", "png", "ppm", "pgm", "pbm", "bmp", "tif", "tiff", "webp"];

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Image files under `dir`, recursively, sorted by path.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// A folder of images. See the module documentation.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub channels: usize,
    pub files: Vec<PathBuf>,
    labels: Vec<Option<usize>>,
    classes: Vec<String>,
    /// Image files directly under `root` ignored because the folder has class directories.
    pub ignored: usize,
}

impl ImageFolder {
    /// Scan `root`. With class subdirectories every image below each is labeled with its
    /// class; without, the images directly under `root` are an unlabeled set. Images are
    /// decoded to `channels` (1 or 3) when loaded.
    pub fn open(root: &Path, channels: usize) -> Result<ImageFolder> {
        if !root.is_dir() {
            return Err(Error::Config {
                what: format!("data path {}", root.display()),
                why: "is not a directory (give an image folder, or `fmnist`)".into(),
            });
        }
        let rd = std::fs::read_dir(root).map_err(|source| Error::Io { path: root.to_path_buf(), source })?;
        let mut class_dirs = vec![];
        let mut loose = vec![];
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                class_dirs.push(p);
            } else if is_image(&p) {
                loose.push(p);
            }
        }
        class_dirs.sort();
        loose.sort();
        let (mut files, mut labels, mut classes) = (vec![], vec![], vec![]);
        let mut ignored = 0;
        if class_dirs.is_empty() {
            labels = vec![None; loose.len()];
            files = loose;
        } else {
            ignored = loose.len();
            for dir in class_dirs {
                let mut found = vec![];
                walk(&dir, &mut found)?;
                if found.is_empty() {
                    continue; // as torchvision: a class needs at least one image
                }
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                labels.extend(std::iter::repeat(Some(classes.len())).take(found.len()));
                files.extend(found);
                classes.push(name);
            }
        }
        if files.is_empty() {
            return Err(Error::Config {
                what: format!("image folder {}", root.display()),
                why: format!(
                    "holds no images (looked for {} files, directly or in class folders)",
                    EXTENSIONS.join("/")
                ),
            });
        }
        Ok(ImageFolder { root: root.to_path_buf(), channels, files, labels, classes, ignored })
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn load(&self, index: usize) -> Result<Image> {
        Image::open(&self.files[index], self.channels)
    }

    fn label(&self, index: usize) -> Option<usize> {
        self.labels[index]
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn source(&self, index: usize) -> String {
        self.files[index].display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::tests::tempdir;

    fn png(path: &Path, w: u32, h: u32, v: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_pixel(w, h, image::Luma([v])).save(path).unwrap();
    }

    #[test]
    fn classes_sorted_recursive_and_unlabeled() {
        let root = tempdir("folder-classes");
        png(&root.join("zebra/a.png"), 4, 4, 10);
        png(&root.join("ant/deep/b.PNG"), 4, 4, 20);
        png(&root.join("ant/a.png"), 5, 3, 30);
        std::fs::write(root.join("ant/notes.txt"), "not an image").unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        png(&root.join("loose.png"), 2, 2, 0);
        let f = ImageFolder::open(&root, 3).unwrap();
        assert_eq!(f.classes(), ["ant", "zebra"]);
        assert_eq!(f.len(), 3);
        assert_eq!(f.ignored, 1);
        assert_eq!((0..3).map(|i| f.label(i)).collect::<Vec<_>>(), [Some(0), Some(0), Some(1)]);
        assert!(f.source(1).ends_with("deep/b.PNG"));
        let img = f.load(0).unwrap();
        assert_eq!((img.width, img.height, img.channels, img.data[0]), (5, 3, 3, 30));

        let flat = tempdir("folder-flat");
        png(&flat.join("1.png"), 2, 2, 1);
        png(&flat.join("0.png"), 2, 2, 0);
        let f = ImageFolder::open(&flat, 1).unwrap();
        assert!(f.classes().is_empty());
        assert_eq!((f.len(), f.label(0)), (2, None));
        assert_eq!(f.load(0).unwrap().data[0], 0);
    }

    #[test]
    fn jpeg_and_rgba_inputs_decode_to_the_requested_channels() {
        let root = tempdir("folder-formats");
        std::fs::create_dir_all(root.join("c")).unwrap();
        image::RgbImage::from_pixel(6, 4, image::Rgb([200, 100, 50])).save(root.join("c/a.jpg")).unwrap();
        image::RgbaImage::from_pixel(3, 3, image::Rgba([10, 20, 30, 0])).save(root.join("c/b.png")).unwrap();
        let f = ImageFolder::open(&root, 3).unwrap();
        let jpg = f.load(0).unwrap();
        assert_eq!((jpg.width, jpg.height, jpg.channels), (6, 4, 3));
        assert!(jpg.data[0].abs_diff(200) <= 3 && jpg.data[2].abs_diff(50) <= 3, "{:?}", &jpg.data[..3]);
        // alpha is dropped, as PIL's convert("RGB")
        assert_eq!(f.load(1).unwrap().data[..3], [10, 20, 30]);
        // grayscale models get PIL's luma of color files
        let gray = ImageFolder::open(&root, 1).unwrap().load(1).unwrap();
        assert_eq!((gray.channels, gray.data[0]), (1, crate::data::image::luma(10, 20, 30)));
    }

    #[test]
    fn a_loader_over_a_folder_with_broken_files_keeps_going() {
        use crate::config::{AugmentConfig, CropConfig};
        use crate::data::{Loader, MultiCrop};
        let root = tempdir("folder-loader");
        for i in 0..6 {
            png(&root.join(format!("c/{i}.png")), 8, 8, 40 * i as u8);
        }
        std::fs::write(root.join("c/2.png"), b"\x89PNG truncated").unwrap();
        std::fs::write(root.join("c/4.png"), b"").unwrap();
        let aug =
            AugmentConfig::flip_only(crate::config::PerChannel::new(&[0.0]), crate::config::PerChannel::new(&[1.0]));
        let crops = MultiCrop::new(CropConfig { count: 2, size: 4, scale: (0.5, 1.0) }, None, aug);
        let ds: std::sync::Arc<dyn Dataset> = std::sync::Arc::new(ImageFolder::open(&root, 1).unwrap());
        let loader = std::sync::Arc::new(Loader::new(ds, crops, 1, 3, 0).unwrap());
        let batches: Vec<_> = loader.epoch(0, 0).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 2);
        assert!(batches.iter().all(|b| b.indices.iter().all(|i| *i != 2 && *i != 4)), "broken files never used");
        assert!(batches.iter().all(|b| b.global.iter().all(|v| v.is_finite())));
        let bad = loader.take_bad();
        assert_eq!(loader.bad_count(), 2);
        assert!(bad.iter().all(|b| b.source.ends_with("2.png") || b.source.ends_with("4.png")), "{bad:?}");
    }

    #[test]
    fn corrupt_and_missing_inputs_name_the_path() {
        let root = tempdir("folder-bad");
        std::fs::create_dir_all(root.join("c")).unwrap();
        std::fs::write(root.join("c/broken.jpg"), b"\xff\xd8\xff\xe0 definitely not a jpeg").unwrap();
        let f = ImageFolder::open(&root, 3).unwrap();
        let e = f.load(0).unwrap_err().to_string();
        assert!(e.contains("broken.jpg") && e.contains("not a decodable image"), "{e}");

        let e = ImageFolder::open(&root.join("nope"), 3).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("not a directory"), "{e}");
        let empty = tempdir("folder-empty");
        let e = ImageFolder::open(&empty, 3).unwrap_err().to_string();
        assert!(e.contains("holds no images"), "{e}");
    }
}
