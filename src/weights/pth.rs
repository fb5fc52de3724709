//! PyTorch's `.pth` files: a zip archive holding `<name>/data.pkl` (the pickled object, with
//! tensors as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` and
//! storages as persistent ids `('storage', torch.FloatStorage, key, location, numel)`) and
//! `<name>/data/<key>` (each storage's raw little-endian bytes).
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use dino_runtime::tensors::NamedTensor;
use dino_runtime::{Error, Result};

use super::pickle::{self, Obj, Pickle};

fn bad(path: &Path, why: String) -> Error {
    Error::Format { path: path.to_path_buf(), why }
}

/// A tensor found in the pickle: its storage and view.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: String,
    dtype: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn tensor_ref(p: &Pickle, i: usize) -> Option<TensorRef> {
    let (module, name) = p.call_of(i)?;
    if module != "torch._utils" || !name.starts_with("_rebuild_tensor") {
        return None;
    }
    let Obj::Call { args, .. } = p.get(i) else { return None };
    let a = p.seq(*args)?;
    let Obj::PersId(pid) = p.get(a[0]) else { return None };
    let id = p.seq(*pid)?; // ('storage', class, key, location, numel)
    let dtype = match p.get(*id.get(1)?) {
        Obj::Global(_, n) => n.clone(),
        _ => return None,
    };
    let storage = p.str(*id.get(2)?)?.to_string();
    let ints =
        |j: usize| -> Option<Vec<usize>> { p.seq(a[j])?.iter().map(|x| p.int(*x).map(|v| v as usize)).collect() };
    Some(TensorRef { storage, dtype, offset: p.int(a[1])? as usize, shape: ints(2)?, stride: ints(3)? })
}

/// Every tensor reachable from `i`, with dotted names (dict keys; list/tuple indices).
fn collect(p: &Pickle, i: usize, prefix: &str, out: &mut Vec<(String, TensorRef)>, depth: usize) {
    if depth > 64 {
        return;
    }
    if let Some(t) = tensor_ref(p, i) {
        out.push((prefix.to_string(), t));
        return;
    }
    let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    if let Some(pairs) = p.pairs(i) {
        for (k, v) in pairs {
            let key = match p.get(*k) {
                Obj::Str(s) => s.clone(),
                Obj::Int(n) => n.to_string(),
                _ => continue,
            };
            collect(p, *v, &join(&key), out, depth + 1);
        }
    } else if let Some(items) = p.seq(i) {
        for (n, v) in items.iter().enumerate() {
            collect(p, *v, &join(&n.to_string()), out, depth + 1);
        }
    }
}

fn element_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "FloatStorage" => 4,
        "DoubleStorage" => 8,
        "HalfStorage" | "BFloat16Storage" => 2,
        _ => return None,
    })
}

fn to_f32(dtype: &str, b: &[u8]) -> f32 {
    match dtype {
        "FloatStorage" => f32::from_le_bytes(b.try_into().unwrap()),
        "DoubleStorage" => f64::from_le_bytes(b.try_into().unwrap()) as f32,
        "HalfStorage" => half::f16::from_le_bytes(b.try_into().unwrap()).to_f32(),
        _ => half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32(),
    }
}

/// The floating-point tensors of a `.pth` file as a flat state dict. When the pickled object
/// is a dict holding `key` (a training checkpoint: `teacher`, `student`) or one of
/// `state_dict` / `model`, only that part is read.
pub fn load_state_dict(path: &Path, bytes: &[u8], key: &str) -> Result<BTreeMap<String, NamedTensor>> {
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(path, format!("not a zip archive: {e}")))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_owned)
        .ok_or_else(|| bad(path, "no data.pkl in the archive: not a PyTorch file".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let mut pkl = vec![];
    zip.by_name(&pkl_name)
        .and_then(|mut f| f.read_to_end(&mut pkl).map_err(Into::into))
        .map_err(|e| bad(path, e.to_string()))?;
    let p = pickle::parse(&pkl).map_err(|e| bad(path, format!("data.pkl: {e}")))?;
    // pick the network of a checkpoint
    let mut root = p.root;
    if let Some(pairs) = p.pairs(p.root) {
        for want in [key, "state_dict", "model"] {
            if let Some((_, v)) = pairs.iter().find(|(k, _)| p.str(*k) == Some(want)) {
                root = *v;
                break;
            }
        }
    }
    let mut refs = vec![];
    collect(&p, root, "", &mut refs, 0);
    if refs.is_empty() {
        return Err(bad(path, "no tensors found in the pickled object".into()));
    }
    let mut storages: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, t) in refs {
        let Some(es) = element_size(&t.dtype) else { continue }; // integer buffers
        if !storages.contains_key(&t.storage) {
            let member = format!("{prefix}data/{}", t.storage);
            let mut b = vec![];
            zip.by_name(&member)
                .and_then(|mut f| f.read_to_end(&mut b).map_err(Into::into))
                .map_err(|e| bad(path, format!("storage {member} of `{name}`: {e}")))?;
            storages.insert(t.storage.clone(), b);
        }
        let s = &storages[&t.storage];
        let n: usize = t.shape.iter().product();
        let mut data = Vec::with_capacity(n);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..n {
            let e = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            let b = s.get(e * es..(e + 1) * es).ok_or_else(|| bad(path, format!("`{name}` reads past its storage")))?;
            data.push(to_f32(&t.dtype, b));
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out.insert(name, NamedTensor { shape: t.shape, data });
    }
    Ok(out)
}
