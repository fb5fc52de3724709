//! IDX files (MNIST's format) and Fashion-MNIST as Debian's `dataset-fashion-mnist`
//! installs it: four gzipped IDX files in one directory.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::image::Image;
use super::Dataset;
use crate::error::{Error, Result};

/// Where Debian's package puts the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Environment variable naming another directory holding the four files.
pub const DIR_VAR: &str = "DINO_FMNIST_DIR";

/// The ten Fashion-MNIST classes, in label order.
pub const FMNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The largest payload an IDX file may declare (16 GiB: ten times ImageNet-1k at 28 x 28).
const MAX_PAYLOAD: u64 = 16 << 30;

/// Read an IDX file (gzipped or not) of unsigned-byte data of `rank` dimensions: the dims and
/// the payload. The header is read first and its size checked (no overflow, no absurd size)
/// before the payload is read, and no more than it declares is ever inflated.
fn read_idx(path: &Path, rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |why: String| Error::Format { path: path.to_path_buf(), why };
    let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let mut file = std::io::BufReader::new(file);
    let gz = std::io::BufRead::fill_buf(&mut file).map(|b| b.starts_with(&[0x1f, 0x8b])).unwrap_or(false);
    let mut r: Box<dyn Read> = if gz { Box::new(flate2::bufread::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let stream = |e: std::io::Error| {
        if gz {
            bad(format!("corrupt gzip stream: {e}"))
        } else {
            Error::Io { path: path.to_path_buf(), source: e }
        }
    };
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut r, &mut magic).map_err(stream)?;
    parse_magic(path, &magic[..n], rank)?;
    let mut raw_dims = vec![0u8; 4 * rank];
    if read_up_to(&mut r, &mut raw_dims).map_err(stream)? < raw_dims.len() {
        return Err(bad("truncated IDX header".into()));
    }
    let dims: Vec<usize> =
        raw_dims.chunks(4).map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")) as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .filter(|&e| e <= MAX_PAYLOAD)
        .ok_or_else(|| bad(format!("IDX dims {dims:?} declare more than {} GiB of data", MAX_PAYLOAD >> 30)))?;
    let mut payload = Vec::with_capacity(expected.min(1 << 30) as usize);
    (&mut r).take(expected + 1).read_to_end(&mut payload).map_err(stream)?;
    if payload.len() as u64 != expected {
        let got = if payload.len() as u64 > expected { "more".to_string() } else { payload.len().to_string() };
        return Err(bad(format!("dims {dims:?} need {expected} bytes of data, the file has {got}")));
    }
    Ok((dims, payload))
}

/// Fill `buf` as far as the stream goes; the bytes read.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Check an IDX magic number: unsigned bytes, `rank` dimensions.
fn parse_magic(path: &Path, magic: &[u8], rank: usize) -> Result<()> {
    let bad = |why: String| Error::Format { path: path.to_path_buf(), why };
    if magic.len() < 4 || magic[0] != 0 || magic[1] != 0 {
        return Err(bad("not an IDX file (the magic number must start with two zero bytes)".into()));
    }
    if magic[2] != 0x08 {
        return Err(bad(format!("IDX element type 0x{:02x}; only unsigned bytes (0x08) are supported", magic[2])));
    }
    if magic[3] as usize != rank {
        return Err(bad(format!("IDX file of {} dimension(s), expected {rank}", magic[3])));
    }
    Ok(())
}

/// Grayscale images from an IDX image file and labels from an IDX label file.
#[derive(Debug, Clone)]
pub struct IdxImages {
    pub path: PathBuf,
    pub rows: usize,
    pub cols: usize,
    pixels: Arc<Vec<u8>>,
    labels: Option<Arc<Vec<u8>>>,
    classes: Vec<String>,
}

impl IdxImages {
    /// Read `images` (rank 3) and optionally `labels` (rank 1, one per image); either may be
    /// gzipped.
    pub fn open(images: &Path, labels: Option<&Path>, classes: &[&str]) -> Result<IdxImages> {
        let (dims, payload) = read_idx(images, 3)?;
        let (n, rows, cols) = (dims[0], dims[1], dims[2]);
        if n == 0 {
            return Err(Error::Format {
                path: images.to_path_buf(),
                why: "holds no images (its first dimension is 0)".into(),
            });
        }
        if rows == 0 || cols == 0 || rows > 1 << 14 || cols > 1 << 14 {
            return Err(Error::Format { path: images.to_path_buf(), why: format!("images of {rows}x{cols} pixels") });
        }
        let labels = match labels {
            Some(lp) => {
                let (ld, lpay) = read_idx(lp, 1)?;
                if ld[0] != n {
                    return Err(Error::Format {
                        path: lp.to_path_buf(),
                        why: format!("{} labels for the {n} images of {}", ld[0], images.display()),
                    });
                }
                if let Some(bad) = lpay.iter().position(|&l| l as usize >= classes.len().max(1)) {
                    return Err(Error::Format {
                        path: lp.to_path_buf(),
                        why: format!("label {} of image {bad} is not one of the {} classes", lpay[bad], classes.len()),
                    });
                }
                Some(Arc::new(lpay.to_vec()))
            }
            None => None,
        };
        Ok(IdxImages {
            path: images.to_path_buf(),
            rows,
            cols,
            pixels: Arc::new(payload),
            labels,
            classes: classes.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The first `n` images only (for quick runs and tests).
    pub fn truncate(mut self, n: usize) -> IdxImages {
        let n = n.min(self.len());
        self.pixels = Arc::new(self.pixels[..n * self.rows * self.cols].to_vec());
        self.labels = self.labels.map(|l| Arc::new(l[..n].to_vec()));
        self
    }

    /// Raw pixels of image `index` (`rows * cols` bytes).
    pub fn pixels(&self, index: usize) -> &[u8] {
        let s = self.rows * self.cols;
        &self.pixels[index * s..(index + 1) * s]
    }
}

impl Dataset for IdxImages {
    fn len(&self) -> usize {
        self.pixels.len() / (self.rows * self.cols)
    }

    fn load(&self, index: usize) -> Result<Image> {
        Ok(Image::new(self.cols, self.rows, 1, self.pixels(index).to_vec()))
    }

    fn label(&self, index: usize) -> Option<usize> {
        self.labels.as_ref().map(|l| l[index] as usize)
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn source(&self, index: usize) -> String {
        format!("{}[{index}]", self.path.display())
    }
}

/// The two splits of Fashion-MNIST.
pub struct Fmnist {
    pub train: IdxImages,
    pub test: IdxImages,
}

/// The directory holding Fashion-MNIST: `dir`, else `$DINO_FMNIST_DIR`, else Debian's.
pub fn fmnist_dir(dir: Option<&Path>) -> PathBuf {
    dir.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(DIR_VAR).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEBIAN_DIR))
}

/// Open Fashion-MNIST (see [`fmnist_dir`]); a missing file says how to install it.
pub fn fashion_mnist(dir: Option<&Path>) -> Result<Fmnist> {
    let dir = fmnist_dir(dir);
    let file = |stem: &str| -> Result<PathBuf> {
        for name in [format!("{stem}.gz"), stem.to_string()] {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
        Err(Error::Config {
            what: "dataset `fmnist`".into(),
            why: format!(
                "{} not found in {}: install Fashion-MNIST with `scripts/get-fmnist.sh` (or `sudo apt-get install \
                 dataset-fashion-mnist`), or point {DIR_VAR} at a directory holding the four IDX files",
                stem,
                dir.display()
            ),
        })
    };
    let open = |split: &str| -> Result<IdxImages> {
        let images = file(&format!("{split}-images-idx3-ubyte"))?;
        let labels = file(&format!("{split}-labels-idx1-ubyte"))?;
        IdxImages::open(&images, Some(&labels), &FMNIST_CLASSES)
    };
    Ok(Fmnist { train: open("train")?, test: open("t10k")? })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn idx(rank: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, rank];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    fn write(dir: &Path, name: &str, bytes: &[u8], gz: bool) -> PathBuf {
        let p = dir.join(name);
        if gz {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&p).unwrap(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap();
        } else {
            std::fs::write(&p, bytes).unwrap();
        }
        p
    }

    #[test]
    fn reads_gzipped_and_plain_files() {
        let dir = tempdir("idx-ok");
        let pixels: Vec<u8> = (0..2 * 3 * 2).map(|i| i as u8 * 10).collect();
        let im = write(&dir, "im.gz", &idx(3, &[2, 3, 2], &pixels), true);
        let lb = write(&dir, "lb", &idx(1, &[2], &[1, 0]), false);
        let d = IdxImages::open(&im, Some(&lb), &["a", "b"]).unwrap();
        assert_eq!((d.len(), d.rows, d.cols), (2, 3, 2));
        let second = d.load(1).unwrap();
        assert_eq!((second.width, second.height, second.channels), (2, 3, 1));
        assert_eq!(second.data, pixels[6..].to_vec());
        assert_eq!((d.label(0), d.label(1)), (Some(1), Some(0)));
        assert_eq!(d.truncate(1).len(), 1);
    }

    #[test]
    fn overflowing_or_empty_headers_are_named() {
        let dir = std::env::temp_dir().join(format!("dino-idx-overflow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // 2^32-1 cubed overflows u64: refused by checked arithmetic, not wrapped to 0 images
        let mut huge = vec![0, 0, 8, 3];
        huge.extend([0xffu8; 12]);
        let p = dir.join("huge-idx3-ubyte");
        std::fs::write(&p, &huge).unwrap();
        let e = IdxImages::open(&p, None, &[]).unwrap_err().to_string();
        assert!(e.contains("huge-idx3-ubyte") && e.contains("more than 16 GiB"), "{e}");
        // dims that multiply to just past u64 wrap to a small number without checking
        let mut wrap = vec![0, 0, 8, 3];
        for d in [1u32 << 31, 1 << 31, 4] {
            wrap.extend(d.to_be_bytes());
        }
        std::fs::write(&p, &wrap).unwrap();
        let e = IdxImages::open(&p, None, &[]).unwrap_err().to_string();
        assert!(e.contains("more than 16 GiB"), "{e}");
        // zero images
        let mut empty = vec![0, 0, 8, 3];
        for d in [0u32, 28, 28] {
            empty.extend(d.to_be_bytes());
        }
        std::fs::write(&p, &empty).unwrap();
        let e = IdxImages::open(&p, None, &[]).unwrap_err().to_string();
        assert!(e.contains("huge-idx3-ubyte") && e.contains("no images"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempdir("idx-bad");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("magic", b"GIF89a....".to_vec(), "not an IDX file"),
            (
                "type",
                {
                    let mut v = idx(3, &[1, 1, 1], &[0]);
                    v[2] = 0x0d;
                    v
                },
                "element type 0x0d",
            ),
            ("rank", idx(1, &[4], &[0; 4]), "1 dimension(s), expected 3"),
            ("short", idx(3, &[2, 2, 2], &[0; 7]), "need 8 bytes of data, the file has 7"),
        ];
        for (name, bytes, why) in cases {
            let p = write(&dir, name, &bytes, false);
            let e = IdxImages::open(&p, None, &[]).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(name), "{name}: {e}");
        }
        let im = write(&dir, "im", &idx(3, &[2, 1, 1], &[0, 0]), false);
        let lb = write(&dir, "lb3", &idx(1, &[3], &[0, 0, 0]), false);
        let e = IdxImages::open(&im, Some(&lb), &["a"]).unwrap_err().to_string();
        assert!(e.contains("3 labels for the 2 images"), "{e}");
        let lb = write(&dir, "lbbig", &idx(1, &[2], &[0, 7]), false);
        let e = IdxImages::open(&im, Some(&lb), &["a", "b"]).unwrap_err().to_string();
        assert!(e.contains("label 7 of image 1"), "{e}");
        let trunc = write(&dir, "trunc.gz", &idx(3, &[2, 1, 1], &[0, 0]), true);
        let bytes = std::fs::read(&trunc).unwrap();
        std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
        let e = IdxImages::open(&trunc, None, &[]).unwrap_err().to_string();
        assert!(e.contains("trunc.gz"), "{e}");
    }

    #[test]
    fn missing_dataset_says_how_to_install() {
        let dir = tempdir("idx-none");
        let e = fashion_mnist(Some(&dir)).err().unwrap().to_string();
        assert!(e.contains("train-images-idx3-ubyte") && e.contains("get-fmnist.sh"), "{e}");
    }

    pub(crate) fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dino-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
