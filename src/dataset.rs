//! Which data a command reads: `fmnist` (Fashion-MNIST's train and test splits) or an image
//! folder (with an optional validation folder for k-NN).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dino_runtime::data::{fashion_mnist, Dataset, Image, ImageFolder};
use dino_runtime::{Error, Result};

/// A data argument: `fmnist`, `fmnist:DIR` (the four IDX files in DIR), or a folder path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DataSpec {
    Fmnist(Option<PathBuf>),
    Folder(PathBuf),
}

impl std::str::FromStr for DataSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<DataSpec, String> {
        if s.is_empty() {
            return Err("empty data argument: give `fmnist` or an image folder".into());
        }
        Ok(match s.strip_prefix("fmnist") {
            Some("") => DataSpec::Fmnist(None),
            Some(rest) if rest.starts_with(':') => DataSpec::Fmnist(Some(PathBuf::from(&rest[1..]))),
            _ => DataSpec::Folder(PathBuf::from(s)),
        })
    }
}

impl std::fmt::Display for DataSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSpec::Fmnist(None) => write!(f, "fmnist"),
            DataSpec::Fmnist(Some(d)) => write!(f, "fmnist:{}", d.display()),
            DataSpec::Folder(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Some images of a dataset, in order.
pub struct Subset {
    pub inner: Arc<dyn Dataset>,
    pub indices: Vec<usize>,
}

impl Subset {
    /// `n` images spread evenly over the dataset (all of them when `n` is larger).
    pub fn spread(inner: Arc<dyn Dataset>, n: usize) -> Subset {
        let len = inner.len();
        let indices = if n >= len { (0..len).collect() } else { (0..n).map(|i| i * len / n).collect() };
        Subset { inner, indices }
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn load(&self, i: usize) -> Result<Image> {
        self.inner.load(self.indices[i])
    }
    fn label(&self, i: usize) -> Option<usize> {
        self.inner.label(self.indices[i])
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn source(&self, i: usize) -> String {
        self.inner.source(self.indices[i])
    }
}

/// Training images and, when there are labels to evaluate with, a test split.
pub struct Splits {
    pub train: Arc<dyn Dataset>,
    pub test: Option<Arc<dyn Dataset>>,
}

fn limited(d: Arc<dyn Dataset>, limit: Option<usize>) -> Arc<dyn Dataset> {
    match limit {
        Some(n) if n < d.len() => Arc::new(Subset::spread(d, n)),
        _ => d,
    }
}

/// Open `spec` decoding to `channels`; `val` is a labeled folder for evaluation (Fashion-MNIST
/// brings its own test split); `limit` and `test_limit` keep that many images of each split.
pub fn open(
    spec: &DataSpec,
    channels: usize,
    val: Option<&Path>,
    limit: Option<usize>,
    test_limit: Option<usize>,
) -> Result<Splits> {
    let (train, test): (Arc<dyn Dataset>, Option<Arc<dyn Dataset>>) = match spec {
        DataSpec::Fmnist(dir) => {
            if let Some(v) = val {
                return Err(Error::Config {
                    what: format!("--val {}", v.display()),
                    why: "Fashion-MNIST brings its own test split; --val names the labeled folder of an image-folder \
                          dataset"
                        .into(),
                });
            }
            let f = fashion_mnist(dir.as_deref())?;
            (Arc::new(f.train), Some(Arc::new(f.test)))
        }
        DataSpec::Folder(root) => {
            let train = ImageFolder::open(root, channels)?;
            if train.ignored > 0 {
                eprintln!(
                    "note: {} image(s) directly under {} ignored: the folder has class folders",
                    train.ignored,
                    root.display()
                );
            }
            let test = match val {
                Some(v) => Some(Arc::new(ImageFolder::open(v, channels)?) as Arc<dyn Dataset>),
                None => None,
            };
            (Arc::new(train), test)
        }
    };
    Ok(Splits { train: limited(train, limit), test: test.map(|t| limited(t, test_limit)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_arguments_parse() {
        assert_eq!("fmnist".parse::<DataSpec>().unwrap(), DataSpec::Fmnist(None));
        assert_eq!("fmnist:/d".parse::<DataSpec>().unwrap(), DataSpec::Fmnist(Some("/d".into())));
        assert_eq!("photos/".parse::<DataSpec>().unwrap(), DataSpec::Folder("photos/".into()));
        assert_eq!("fmnist-like".parse::<DataSpec>().unwrap(), DataSpec::Folder("fmnist-like".into()));
        assert!("".parse::<DataSpec>().is_err());
        assert_eq!(DataSpec::Fmnist(Some("/d".into())).to_string(), "fmnist:/d");
    }
}
