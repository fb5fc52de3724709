//! Named f32 tensors on disk, in the safetensors format.
//!
//! luminal's own `SafeTensorSaver` writes unreadable files (notes/luminal-0.2.md, bug 9); this
//! is the project's reader and writer. Writes are atomic: a temporary file in the same
//! directory, synced, then renamed over the target, so a crash never leaves half a file.
use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};

/// One tensor: shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A set of named tensors, ordered by name, plus free-form string metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, NamedTensor>,
    pub metadata: BTreeMap<String, String>,
}

fn format_err(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Format { path: path.to_path_buf(), why: why.to_string() }
}

impl TensorFile {
    /// Read a safetensors file; F32, F16, BF16 and F64 tensors are converted to f32.
    pub fn load(path: impl AsRef<Path>) -> Result<TensorFile> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parse safetensors bytes (`path` only names the source in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<TensorFile> {
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| format_err(path, format!("not a safetensors file: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| format_err(path, e))?;
        let mut out = TensorFile::default();
        if let Some(m) = meta.metadata() {
            out.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        for (name, view) in st.tensors() {
            let data = to_f32(&view).map_err(|why| format_err(path, format!("tensor `{name}`: {why}")))?;
            out.tensors.insert(name, NamedTensor { shape: view.shape().to_vec(), data });
        }
        Ok(out)
    }

    /// Add or replace a tensor.
    pub fn insert(&mut self, name: impl Into<String>, shape: &[usize], data: Vec<f32>) {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len(), "shape and data disagree");
        self.tensors.insert(name.into(), NamedTensor { shape: shape.to_vec(), data });
    }

    /// The tensor with this name, or an error naming the file's nearest names.
    pub fn get(&self, name: &str) -> Result<&NamedTensor> {
        self.tensors.get(name).ok_or_else(|| {
            let mut near: Vec<&str> =
                self.tensors.keys().map(|k| k.as_str()).filter(|k| shares_suffix(k, name)).take(3).collect();
            near.sort();
            let hint = if near.is_empty() { String::new() } else { format!(" (did you mean {})", near.join(", ")) };
            Error::UnknownName { kind: "tensor", name: name.to_string(), hint }
        })
    }

    /// Serialize to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let raw: Vec<(&String, Vec<u8>, &NamedTensor)> =
            self.tensors.iter().map(|(k, t)| (k, t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t)).collect();
        let views: Vec<(&String, TensorView)> = raw
            .iter()
            .map(|(k, b, t)| TensorView::new(Dtype::F32, t.shape.clone(), b).map(|v| (*k, v)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Backend(format!("safetensors: {e}")))?;
        let meta =
            (!self.metadata.is_empty()).then(|| self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        safetensors::serialize(views, &meta).map_err(|e| Error::Backend(format!("safetensors: {e}")))
    }

    /// Write atomically (temporary file in the same directory, fsync, rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::files::write_atomic(path.as_ref(), &self.to_bytes()?)
    }
}

fn shares_suffix(a: &str, b: &str) -> bool {
    a.rsplit('.').next() == b.rsplit('.').next()
}

fn to_f32(v: &TensorView) -> std::result::Result<Vec<f32>, String> {
    let b = v.data();
    let chunks = |n: usize| b.chunks_exact(n);
    Ok(match v.dtype() {
        Dtype::F32 => chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => chunks(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::F16 => chunks(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => chunks(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => return Err(format!("dtype {other:?} is not a floating-point type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata() {
        let dir = std::env::temp_dir().join(format!("dino-tensors-{}", std::process::id()));
        let path = dir.join("a.safetensors");
        let mut f = TensorFile::default();
        f.insert("blocks.0.attn.qkv.weight", &[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
        f.insert("cls_token", &[1, 1, 2], vec![0.25, -0.5]);
        f.metadata.insert("step".into(), "7".into());
        f.save(&path).unwrap();
        let g = TensorFile::load(&path).unwrap();
        assert_eq!(f, g);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let e = TensorFile::from_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", Path::new("bad.safetensors"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("bad.safetensors: not a safetensors file"), "{msg}");
    }

    #[test]
    fn missing_name_suggests_similar() {
        let mut f = TensorFile::default();
        f.insert("norm.weight", &[1], vec![1.0]);
        let msg = f.get("norm1.weight").unwrap_err().to_string();
        assert!(msg.contains("did you mean norm.weight"), "{msg}");
    }
}
