//! The case runner of the bad-input suites (`tests/bad_input.rs`, `tests/bad_weights.rs`):
//! run the `dino` binary on a bad input and assert the exit status, that the message names
//! the input, and that no file that was there before was lost or changed.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const USAGE: i32 = 2;
pub const REFUSED: i32 = 1;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn subset() -> String {
    format!("fmnist:{}", root().join("tests/fixtures/fmnist-subset").display())
}

pub fn dino(dir: &Path, args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dino")).current_dir(dir).args(args).env("RAYON_NUM_THREADS", "2").output().unwrap()
}

/// Every file under `dir` with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.insert(p, b);
            }
        }
    }
    out
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

pub fn scratch(tag: &str) -> super::Scratch {
    super::Scratch::new(&format!("bad-{tag}"))
}

pub struct Case {
    pub name: &'static str,
    pub args: Vec<String>,
    pub exit: i32,
    /// Every one must appear in the message (stderr).
    pub names: Vec<String>,
}

pub fn case<S: ToString>(name: &'static str, args: impl IntoIterator<Item = S>, exit: i32, names: &[&str]) -> Case {
    Case {
        name,
        args: args.into_iter().map(|s| s.to_string()).collect(),
        exit,
        names: names.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn run_cases(dir: &Path, cases: Vec<Case>) -> usize {
    let mut failures = vec![];
    let n = cases.len();
    for c in cases {
        let before = snapshot(dir);
        let out = dino(dir, &c.args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code();
        if code != Some(c.exit) {
            failures.push(format!(
                "{}: exit {code:?}, expected {} (`dino {}`)\n{err}",
                c.name,
                c.exit,
                c.args.join(" ")
            ));
            continue;
        }
        if let Some(missing) = c.names.iter().find(|n| !err.contains(n.as_str())) {
            failures.push(format!("{}: the message does not name `{missing}`:\n{err}", c.name));
            continue;
        }
        let after = snapshot(dir);
        for (p, b) in &before {
            if after.get(p) != Some(b) {
                failures.push(format!("{}: {} was lost or changed", c.name, p.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {n} cases failed:\n\n{}", failures.len(), failures.join("\n\n"));
    n
}
