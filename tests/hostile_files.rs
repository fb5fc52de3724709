//! Files from strangers: PyTorch pickles with code in them, storages that inflate past what
//! their tensors need, weights with tensors the model has no place for, Hugging Face model
//! directories and config files that disagree with the tensors. Every one is refused (or
//! honoured) with a message naming the file, and nothing from a file is ever run.
mod common;
use common::Scratch;

use std::path::PathBuf;

use dino::weights;

fn dir(tag: &str) -> Scratch {
    Scratch::new(&format!("hostile-{tag}"))
}

/// A tiny pickle assembler (protocol 2 opcodes).
#[derive(Default)]
struct Pkl(Vec<u8>);

impl Pkl {
    fn op(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Self {
        let mut b = vec![b'X'];
        b.extend((s.len() as u32).to_le_bytes());
        b.extend(s.as_bytes());
        self.op(&b)
    }
    fn int(self, v: u8) -> Self {
        self.op(&[b'K', v])
    }
    fn global(self, module: &str, name: &str) -> Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    /// `_rebuild_tensor_v2(storage '0' of `numel` floats, 0, shape, stride, False, OrderedDict())`
    fn tensor(self, numel: u8, shape: &[u8], stride: &[u8]) -> Self {
        let mut p = self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
        p = p.op(b"(").str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(numel).op(b"tQ");
        p = p.int(0).op(b"(");
        for &d in shape {
            p = p.int(d);
        }
        p = p.op(b"t(");
        for &s in stride {
            p = p.int(s);
        }
        p.op(b"t\x89").global("collections", "OrderedDict").op(b")R").op(b"tR")
    }
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `{"w": a 2x2 tensor, <extra key>: <extra value>}`
fn state_dict(extra: impl FnOnce(Pkl) -> Pkl) -> Vec<u8> {
    let p = Pkl::default().op(b"\x80\x02}(").str("w").tensor(4, &[2, 2], &[2, 1]);
    extra(p).op(b"u.").0
}

#[test]
fn a_clean_state_dict_loads() {
    let d = dir("clean");
    let f = d.join("clean.pth");
    common::write_pth(&f, &state_dict(|p| p), &floats(&[1.0, 2.0, 3.0, 4.0]));
    let b = weights::load(&f, "teacher").unwrap();
    assert_eq!(b.tensors["w"].shape, vec![2, 2]);
    assert_eq!(b.tensors["w"].data, vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn code_in_a_pickle_is_refused_naming_the_global_and_never_run() {
    let d = dir("code");
    let marker = d.join("pwned");
    let cmd = format!("touch {}", marker.display());
    // as a value of the state dict (GLOBAL + REDUCE)
    let as_value = state_dict(|p| p.str("evil").global("os", "system").op(b"(").str(&cmd).op(b"tR"));
    // embedded before the dict, its result popped (what a doctored file does)
    let mut embedded = Pkl::default().op(b"\x80\x02").global("os", "system").op(b"(").str(&cmd).op(b"tR0").0;
    embedded.extend_from_slice(&state_dict(|p| p)[2..]);
    // with the builtins module, by STACK_GLOBAL
    let stack = state_dict(|p| p.str("e").str("builtins").str("eval").op(b"\x93(").str("1+1").op(b"tR"));
    for (name, pkl, global) in [
        ("value.pth", as_value, "os.system"),
        ("embedded.pth", embedded, "os.system"),
        ("stack.pth", stack, "builtins.eval"),
    ] {
        let f = d.join(name);
        common::write_pth(&f, &pkl, &floats(&[1.0, 2.0, 3.0, 4.0]));
        let e = weights::load(&f, "teacher").unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(&format!("`{global}`")) && e.contains("--safe-global"), "{e}");
        // even trusted, the reader only builds objects: nothing runs
        let b = weights::load_trusting(&f, "teacher", &[global.to_string()]).unwrap();
        assert_eq!(b.tensors["w"].data.len(), 4);
        assert!(!marker.exists(), "{name}: the pickle's command ran");
    }
}

#[test]
fn storages_are_checked_before_they_are_inflated() {
    let d = dir("storage");
    // 1 MiB of zeros (a kilobyte deflated) behind a storage that says 4 floats
    let f = d.join("bomb.pth");
    common::write_pth(&f, &state_dict(|p| p), &vec![0u8; 1 << 20]);
    let e = weights::load(&f, "teacher").unwrap_err().to_string();
    assert!(e.contains("bomb.pth") && e.contains("inflates to 1048576 bytes") && e.contains("take 16"), "{e}");
    // a view that reads past its storage
    let f = d.join("past.pth");
    let pkl = Pkl::default().op(b"\x80\x02}(").str("w").tensor(4, &[100, 100], &[100, 1]).op(b"u.").0;
    common::write_pth(&f, &pkl, &floats(&[0.0; 4]));
    let e = weights::load(&f, "teacher").unwrap_err().to_string();
    assert!(e.contains("past.pth") && e.contains("`w` reads 10000 elements") && e.contains("holds 4"), "{e}");
    // strides whose extent overflows
    let f = d.join("overflow.pth");
    let mut pkl = Pkl::default().op(b"\x80\x02}(").str("w").global("torch._utils", "_rebuild_tensor_v2").op(b"(");
    pkl = pkl.op(b"(").str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(4).op(b"tQ").int(0);
    pkl = pkl.op(b"(\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x3f\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x3ft(K\x01K\x01t");
    pkl = pkl.op(b"\x89").global("collections", "OrderedDict").op(b")RtRu.");
    common::write_pth(&f, &pkl.0, &floats(&[0.0; 4]));
    let e = weights::load(&f, "teacher").unwrap_err().to_string();
    assert!(e.contains("overflow.pth") && e.contains("overflows"), "{e}");
}

#[test]
fn official_full_checkpoints_need_their_namespace_allowed() {
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/weights/full_checkpoint.pth");
    let e = weights::load(&f, "teacher").unwrap_err().to_string();
    assert!(e.contains("`argparse.Namespace`") && e.contains("--safe-global argparse.Namespace"), "{e}");
    assert!(weights::load_trusting(&f, "teacher", &["argparse.Namespace".into()]).is_ok());
}
