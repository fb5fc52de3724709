//! The architecture's import rules, checked on the sources (DESIGN §4, DEVELOPERS.md): each
//! backend turns a device-neutral plan into something it runs and imports no other backend;
//! the passes and the plan know no device; no backend knows DINO types; the facade names a
//! concrete runtime only where it opens a device; nothing below the CLI imports the CLI; no
//! subcommand imports another's.
//!
//! A rule is a set of files and a list of path fragments none of their code lines may hold
//! (comments are skipped, so docs may still name what they describe).
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file below `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `(file, line number, line)` of every code line of `files` holding one of `banned`.
fn offenders(files: &[PathBuf], banned: &[&str]) -> Vec<String> {
    let mut found = vec![];
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if let Some(b) = banned.iter().find(|b| code.contains(*b)) {
                let rel = f.strip_prefix(root()).unwrap_or(f);
                found.push(format!("{}:{}: `{b}` in `{}`", rel.display(), i + 1, line.trim()));
            }
        }
    }
    found
}

fn assert_none(rule: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{rule}:\n  {}", found.join("\n  "));
}

fn backend() -> PathBuf {
    root().join("dino-runtime/src/backend")
}

const CPU: &[&str] = &["backend::cpu", "super::cpu", "CpuRuntime", "CpuCompiler"];
const CUDA: &[&str] = &["backend::cuda", "super::cuda", "CudaRuntime", "cudarc"];

#[test]
fn the_cuda_backend_imports_nothing_of_the_cpu_backend() {
    assert_none("backend/cuda imports the CPU backend", offenders(&rust_files(&backend().join("cuda")), CPU));
}

#[test]
fn the_cpu_backend_imports_nothing_of_the_cuda_backend() {
    assert_none("backend/cpu imports the CUDA backend", offenders(&rust_files(&backend().join("cpu")), CUDA));
}

#[test]
fn passes_plan_and_executor_interface_know_no_device() {
    let mut neutral: Vec<PathBuf> = rust_files(&backend().join("plan"));
    for e in std::fs::read_dir(backend()).expect("backend/") {
        let p = e.expect("entry").path();
        if p.is_file() && p.extension().is_some_and(|x| x == "rs") && !p.ends_with("mod.rs") {
            neutral.push(p);
        }
    }
    assert!(neutral.len() >= 10, "found the passes and the plan: {neutral:?}");
    let both: Vec<&str> = CPU.iter().chain(CUDA).copied().collect();
    assert_none("a device-neutral backend file imports a backend", offenders(&neutral, &both));
}

#[test]
fn no_backend_knows_dino_types() {
    let banned = ["crate::dino", "DinoStep", "DinoModel", "crate::model", "DinoConfig"];
    assert_none("a backend file names DINO types", offenders(&rust_files(&backend()), &banned));
}

#[test]
fn the_facade_names_a_runtime_only_where_it_opens_a_device() {
    let files: Vec<PathBuf> =
        rust_files(&root().join("src")).into_iter().filter(|f| !f.ends_with("src/device.rs")).collect();
    let both: Vec<&str> = CPU.iter().chain(CUDA).copied().collect();
    assert_none("a facade file outside src/device.rs names a concrete runtime", offenders(&files, &both));
}

#[test]
fn nothing_below_the_cli_imports_the_cli() {
    let src = root().join("src");
    let files: Vec<PathBuf> = rust_files(&src)
        .into_iter()
        .filter(|f| !f.starts_with(src.join("cli")) && !f.ends_with("src/main.rs"))
        .collect();
    assert_none("a file below the CLI imports it", offenders(&files, &["crate::cli", "dino::cli"]));
}

#[test]
fn no_subcommand_imports_another() {
    let cli = root().join("src/cli");
    let files = rust_files(&cli);
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|n| n != "mod" && n != "common")
        .collect();
    for f in &files {
        let own = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        // a subcommand's parts are named after it (`bench_gpu`, `bench_passes` are parts of
        // `bench`): the subcommand may name its own parts, nothing else
        let part_prefix = format!("{own}_");
        let banned: Vec<String> = names
            .iter()
            .filter(|n| **n != own && !n.starts_with(&part_prefix) && own != "mod")
            .flat_map(|n| [format!("super::{n}::"), format!("crate::cli::{n}::")])
            .collect();
        let banned: Vec<&str> = banned.iter().map(String::as_str).collect();
        assert_none("a subcommand imports another's module", offenders(std::slice::from_ref(f), &banned));
    }
}

#[test]
fn the_rules_see_a_violation() {
    // the checker itself: a file with a banned import is reported, a comment is not
    let dir = std::env::temp_dir().join(format!("dino-layering-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let f = dir.join("x.rs");
    std::fs::write(&f, "// uses backend::cpu in a comment only\nuse crate::backend::cpu::CpuRuntime;\n")
        .expect("write");
    let found = offenders(std::slice::from_ref(&f), CPU);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains(":2:"), "{found:?}");
}
