//! Fuzzing the readers of files from strangers (proptest): the pickle machine, `.pth`
//! archives, safetensors files and our checkpoints, IDX files (plain and gzipped) and images.
//! Each takes a real file, mutated (bytes replaced, runs deleted or inserted, the file cut
//! short) or random bytes, and must answer with a value or an error, never a panic, an abort
//! or a hang. CI runs 256 cases per reader; `PROPTEST_CASES=20000 cargo test --release --test
//! fuzz` is the longer run.
mod common;
use common::Scratch;
use std::path::{Path, PathBuf};

use dino::train::checkpoint;
use dino::weights::{pickle, pth};
use dino_runtime::data::{IdxImages, Image};
use dino_runtime::tensors::TensorFile;
use proptest::prelude::*;

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)).unwrap()
}

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Cut(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        1 => (any::<usize>(), 1..64usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(a, v)| Mutation::Insert(a, v)),
        1 => any::<usize>().prop_map(Mutation::Cut),
    ]
}

/// Mutations, biased to the start of the file where the headers are.
fn mutate(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let at = |a: usize, len: usize| {
            let len = len.max(1);
            if a % 2 == 0 {
                (a / 2) % len.min(512)
            } else {
                (a / 2) % len
            }
        };
        match m {
            Mutation::Set(a, v) if !b.is_empty() => {
                let i = at(*a, b.len());
                b[i] = *v;
            }
            Mutation::Delete(a, n) if !b.is_empty() => {
                let i = at(*a, b.len());
                b.drain(i..(i + n).min(b.len()));
            }
            Mutation::Insert(a, v) => {
                let i = at(*a, b.len() + 1).min(b.len());
                b.splice(i..i, v.iter().copied());
            }
            Mutation::Cut(a) => b.truncate(at(*a, b.len() + 1)),
            _ => {}
        }
    }
    b
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..8)
}

/// The data.pkl of the float16 backbone fixture.
fn clean_pickle() -> Vec<u8> {
    use std::io::Read;
    let b = fixture("weights/backbone_fp16.pth");
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(b)).unwrap();
    let name = z.file_names().find(|n| n.ends_with("data.pkl")).unwrap().to_string();
    let mut out = vec![];
    z.by_name(&name).unwrap().read_to_end(&mut out).unwrap();
    out
}

/// A random program of the pickle machine's opcodes (with small, well-formed arguments), so
/// that the stack and memo rules are reached, not only the byte-level checks.
fn opcodes() -> impl Strategy<Value = Vec<u8>> {
    let op = prop_oneof![
        proptest::sample::select(vec![
            &b"("[..],
            b"}",
            b"]",
            b")",
            b"N",
            b"\x88",
            b"t",
            b"l",
            b"d",
            b"a",
            b"e",
            b"s",
            b"u",
            b"R",
            b"\x81",
            b"\x92",
            b"b",
            b"Q",
            b"0",
            b"1",
            b"2",
            b"\x94",
            b"\x85",
            b"\x86",
            b"\x87",
            b"\x93",
            b"\x8f",
            b"\x90",
        ])
        .prop_map(|o| o.to_vec()),
        any::<u8>().prop_map(|v| vec![b'K', v]),
        any::<u8>().prop_map(|v| vec![b'q', v]),
        (0..4u8).prop_map(|v| vec![b'h', v]),
        "[a-z]{0,6}".prop_map(|t| [vec![0x8c, t.len() as u8], t.into_bytes()].concat()),
        Just(b"ctorch._utils\n_rebuild_tensor_v2\n".to_vec()),
        Just(b"ccollections\nOrderedDict\n".to_vec()),
    ];
    proptest::collection::vec(op, 0..48).prop_map(|ops| [vec![0x80, 2], ops.concat(), vec![b'.']].concat())
}

fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_pickle_machine_never_panics(ms in mutations(), junk in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = pickle::parse(&mutate(clean_pickle(), &ms));
        let _ = pickle::parse(&junk);
    }


    #[test]
    fn pth_archives_never_panic(ms in mutations()) {
        let b = mutate(fixture("weights/backbone_fp16.pth"), &ms);
        let _ = pth::load_state_dict(Path::new("fuzz.pth"), &b, "teacher", &[]);
    }

    #[test]
    fn safetensors_and_checkpoints_never_panic(ms in mutations()) {
        let b = mutate(fixture("weights/timm.safetensors"), &ms);
        if let Ok(f) = TensorFile::from_bytes(&b, Path::new("fuzz.safetensors")) {
            let _ = checkpoint::checked(f, Path::new("fuzz.safetensors"));
        }
        let dir = Scratch::new("fuzz");
        let p = dir.join("fuzz-meta.safetensors");
        std::fs::write(&p, &b).unwrap();
        let _ = checkpoint::read_meta(&p);
    }

    #[test]
    fn idx_files_never_panic(ms in mutations(), gz in any::<bool>()) {
        let raw = fixture("fmnist-subset/t10k-labels-idx1-ubyte.gz");
        let plain = {
            use std::io::Read;
            let mut out = vec![];
            flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).unwrap();
            out
        };
        let dir = Scratch::new("fuzz");
        let (images, labels) = (dir.join("images-idx3"), dir.join("labels-idx1"));
        let imgs = fixture("fmnist-subset/t10k-images-idx3-ubyte.gz");
        std::fs::write(&images, if gz { mutate(imgs, &ms) } else { mutate(imgs, &[]) }).unwrap();
        std::fs::write(&labels, mutate(if gz { raw } else { plain }, &ms)).unwrap();
        let _ = IdxImages::open(&images, Some(&labels), &["a"; 10]);
    }

    #[test]
    fn images_never_panic(ms in mutations(), png in any::<bool>()) {
        let img = Image::filled(9, 7, 3, 120);
        let bytes = if png {
            dino_runtime::data::image::png_bytes(&img.data, 9, 7, image::ExtendedColorType::Rgb8).unwrap()
        } else {
            let mut out = vec![];
            image::codecs::jpeg::JpegEncoder::new(&mut out).encode(&img.data, 9, 7, image::ExtendedColorType::Rgb8).unwrap();
            out
        };
        let dir = Scratch::new("fuzz");
        let p = dir.join(if png { "fuzz.png" } else { "fuzz.jpg" });
        std::fs::write(&p, mutate(bytes, &ms)).unwrap();
        let _ = Image::open(&p, 3);
        let _ = Image::open(&p, 1);
    }
}

proptest! {
    // programs are cheap and the stack rules need many of them to be reached (an odd DICT took
    // about 10^4 cases to find): 16 times the cases of the others
    #![proptest_config(ProptestConfig { cases: 16 * config().cases, ..config() })]

    #[test]
    fn random_pickle_programs_never_panic(program in opcodes()) {
        let _ = pickle::parse(&program);
    }
}
