//! Writing files so that a crash, a `kill -9` or a full disk never leaves half of one: every
//! file the project writes goes to a temporary file beside its target, is synced, and is
//! renamed over the target (a rename within a directory is atomic on POSIX file systems). A
//! reader sees the old file or the new one, never a torn one; a failed write removes its
//! temporary file and leaves the old file as it was.
//!
//! ```text
//!   bytes --write--> DIR/.NAME.tmp-PID --fsync--> rename --> DIR/NAME --fsync DIR
//!                          |  (error: removed, DIR/NAME untouched)
//! ```
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// The temporary file a write of `path` goes through.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Write `path` atomically with what `fill` writes (buffered).
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let io = io_err(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(&io)?;
    }
    let tmp = temp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        fill(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    // the rename itself reaches the disk with the directory's entry
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Copy `from` to `to` atomically (`to` is complete or absent, never torn).
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let mut src = std::fs::File::open(from).map_err(io_err(from))?;
    write_atomic_with(to, |w| std::io::copy(&mut src, w).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dino-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_whole_and_leaves_no_temporary() {
        let d = dir("replace");
        let p = d.join("a.json");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new contents").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new contents");
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let d = dir("fail");
        let p = d.join("log.jsonl");
        write_atomic(&p, b"kept\n").unwrap();
        let e = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("log.jsonl") && e.to_string().contains("disk full"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"kept\n");
        assert!(!temp_path(&p).exists());
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn copies_atomically() {
        let d = dir("copy");
        write_atomic(&d.join("a"), b"12345").unwrap();
        copy_atomic(&d.join("a"), &d.join("b")).unwrap();
        assert_eq!(std::fs::read(d.join("b")).unwrap(), b"12345");
        let e = copy_atomic(&d.join("missing"), &d.join("c")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(!d.join("c").exists());
        std::fs::remove_dir_all(d).ok();
    }
}
