//! PyTorch's `.pth` files: a zip archive holding `<name>/data.pkl` (the pickled object, with
//! tensors as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` and
//! storages as persistent ids `('storage', torch.FloatStorage, key, location, numel)`) and
//! `<name>/data/<key>` (each storage's raw little-endian bytes).
//!
//! Files from strangers: nothing in a pickle is ever called (the reader only builds a graph of
//! objects), and still every global it names must be one `torch.save` of tensors writes
//! (PyTorch's `weights_only=True` rule) or one the caller trusts (`--safe-global`). Every
//! storage's declared size is checked against its `numel` and the views of the tensors on it
//! before anything is inflated, and the inflation is capped at that size.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use dino_runtime::tensors::NamedTensor;
use dino_runtime::{Error, Result};

use super::pickle::{self, Obj, Pickle};

fn bad(path: &Path, why: String) -> Error {
    Error::Format { path: path.to_path_buf(), why }
}

/// The globals `torch.save` of tensors and their containers writes (PyTorch's `weights_only`
/// unpickler allows these; storages and dtypes are matched by rule below).
const SAFE_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "collections.Counter",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.complex",
    "_codecs.encode",
    "torch.Size",
    "torch.Tensor",
    "torch.device",
    "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout",
    "torch._tensor._rebuild_from_type_v2",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_wrapper_subclass",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
];

/// torch's dtypes (`torch.float32`, ...), as pickled with tensors and storages.
const DTYPES: &[&str] = &[
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "int64",
    "long",
    "int32",
    "int",
    "int16",
    "short",
    "int8",
    "uint8",
    "bool",
    "complex64",
    "complex128",
];

fn is_safe_global(module: &str, name: &str, trusted: &[String]) -> bool {
    let full = format!("{module}.{name}");
    SAFE_GLOBALS.contains(&full.as_str())
        || (module == "torch" && (name.ends_with("Storage") || DTYPES.contains(&name)))
        || trusted.iter().any(|t| *t == full)
}

/// Refuse a pickle naming a global outside the allowlist (the first one, with the file).
fn check_globals(path: &Path, p: &Pickle, trusted: &[String]) -> Result<()> {
    for o in &p.objects {
        if let Obj::Global(module, name) = o {
            if !is_safe_global(module, name, trusted) {
                return Err(bad(
                    path,
                    format!(
                        "data.pkl names the global `{module}.{name}`, which a file of tensors does not need \
                         (PyTorch's weights_only rule): refused. Nothing in the file was run; if you trust it, \
                         allow the global with --safe-global {module}.{name}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A tensor found in the pickle: its storage and view.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: String,
    dtype: String,
    /// Elements of the storage, as its persistent id says.
    numel: usize,
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
    let Obj::PersId(pid) = p.get(*a.first()?) else { return None };
    let id = p.seq(*pid)?; // ('storage', class, key, location, numel)
    let dtype = match p.get(*id.get(1)?) {
        Obj::Global(_, n) => n.clone(),
        _ => return None,
    };
    let storage = p.str(*id.get(2)?)?.to_string();
    let numel = usize::try_from(p.int(*id.get(4)?)?).ok()?;
    let uint = |x: usize| p.int(x).and_then(|v| usize::try_from(v).ok());
    let ints = |j: usize| -> Option<Vec<usize>> { p.seq(*a.get(j)?)?.iter().map(|x| uint(*x)).collect() };
    Some(TensorRef { storage, dtype, numel, offset: uint(*a.get(1)?)?, shape: ints(2)?, stride: ints(3)? })
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

impl TensorRef {
    /// Elements of the view, and one past the last storage element it reads (checked: `None`
    /// when the numbers overflow).
    fn extent(&self) -> Option<(usize, usize)> {
        let n = self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        if n == 0 {
            return Some((0, 0));
        }
        if self.stride.len() != self.shape.len() {
            return None;
        }
        let last = self
            .shape
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?))?;
        Some((n, last.checked_add(1)?))
    }
}

/// The floating-point tensors of a `.pth` file as a flat state dict. When the pickled object
/// is a dict holding `key` (a training checkpoint: `teacher`, `student`) or one of
/// `state_dict` / `model`, only that part is read. `trusted` globals are allowed beside the
/// ones tensors need.
pub fn load_state_dict(
    path: &Path,
    bytes: &[u8],
    key: &str,
    trusted: &[String],
) -> Result<BTreeMap<String, NamedTensor>> {
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
    check_globals(path, &p, trusted)?;
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
        let member = format!("{prefix}data/{}", t.storage);
        let (n, end) = t
            .extent()
            .ok_or_else(|| bad(path, format!("`{name}`: shape {:?} with strides {:?} overflows", t.shape, t.stride)))?;
        if end > t.numel {
            return Err(bad(
                path,
                format!("`{name}` reads {end} elements of storage {member}, which holds {}", t.numel),
            ));
        }
        if !storages.contains_key(&t.storage) {
            let want = t.numel.checked_mul(es).ok_or_else(|| bad(path, format!("storage {member}: size overflows")))?;
            let mut f = zip.by_name(&member).map_err(|e| bad(path, format!("storage {member} of `{name}`: {e}")))?;
            // checked before inflating: a storage must hold what its id says, no more
            if f.size() != want as u64 {
                return Err(bad(
                    path,
                    format!(
                        "storage {member} of `{name}` inflates to {} bytes; its {} {} elements take {want}",
                        f.size(),
                        t.numel,
                        t.dtype
                    ),
                ));
            }
            let mut b = Vec::with_capacity(want);
            (&mut f)
                .take(want as u64)
                .read_to_end(&mut b)
                .map_err(|e| bad(path, format!("storage {member} of `{name}`: {e}")))?;
            if b.len() != want {
                return Err(bad(path, format!("storage {member} of `{name}`: {} bytes, expected {want}", b.len())));
            }
            storages.insert(t.storage.clone(), b);
        }
        let s = &storages[&t.storage];
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
