//! Shared helpers of the integration tests: fixtures and comparisons.
#![allow(dead_code)]
pub mod cli_cases;
pub mod mini;
pub mod splitmix;
use std::path::{Path, PathBuf};

use dino::runtime::tensors::{NamedTensor, TensorFile};

/// A fresh folder under the system's temp dir (`dino-{tag}-XXXXXX`) for one test's files.
/// Dropping it removes the folder, unless the test is failing: then it is kept and its path
/// printed, so what the test wrote can be looked at.
pub struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = tempfile::Builder::new()
            .prefix(&format!("dino-{tag}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("a temp folder for {tag}: {e}"));
        Scratch(Some(d))
    }

    /// A path for a folder that does not exist yet (a run's `--out`), removed as [`Scratch::new`]'s.
    pub fn unmade(tag: &str) -> Scratch {
        let s = Scratch::new(tag);
        std::fs::remove_dir(&*s).unwrap_or_else(|e| panic!("{}: {e}", s.display()));
        s
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.as_ref().expect("a live scratch folder").path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = self.0.take() {
                eprintln!("the failing test's files are kept in {}", d.keep().display());
            }
        }
    }
}

/// A fixture written by `tests/reference/make_fixtures.py`.
pub fn fixture(name: &str) -> TensorFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.safetensors"));
    TensorFile::load(&path).unwrap_or_else(|e| panic!("{e} (regenerate with tests/reference/make_fixtures.py)"))
}

pub fn tensor<'a>(f: &'a TensorFile, name: &str) -> &'a NamedTensor {
    f.get(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Assert `|got - want| <= atol + rtol * |want|` everywhere; the message names the worst
/// element and its distance.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    let mut worst = (0f32, 0usize, 0f32);
    let mut max_abs = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        max_abs = max_abs.max(d);
        let ratio = d / (atol + rtol * w.abs());
        if ratio > worst.0 || ratio.is_nan() {
            worst = (ratio, i, d);
        }
    }
    assert!(
        worst.0 <= 1.0,
        "{what}: element {} is {} but the reference says {} (|diff| {:.3e}; max abs error {:.3e}; tolerance {atol} + {rtol}*|ref|)",
        worst.1,
        got[worst.1],
        want[worst.1],
        worst.2,
        max_abs
    );
}

/// Max absolute difference.
pub fn max_abs_err(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// A PyTorch `.pth` archive as `torch.save` lays it out: `archive/data.pkl` and one storage
/// `archive/data/0`, deflated.
pub fn write_pth(path: &std::path::Path, pkl: &[u8], storage: &[u8]) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pkl).unwrap();
    z.start_file("archive/data/0", opts).unwrap();
    z.write_all(storage).unwrap();
    z.finish().unwrap();
}

/// Graph building and the passes recurse deeply on a whole training step: run `f` on a big
/// stack, as the `dino` binary does.
pub fn big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(f)
        .expect("thread")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
