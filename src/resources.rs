//! What a request costs, checked before it is allocated. Rust aborts the process when an
//! allocation fails, so an absurd size (`--epochs 10^12`, `--local-crops-number 100000`,
//! `attention --size 100000`) must be refused before the memory is asked for: the estimates
//! of `dino_runtime::config` (lower bounds) are compared with the memory this machine has
//! available, and the refusal names the flags and the memory.
use dino_runtime::{Error, Result};

/// Bytes of memory available now (`MemAvailable` of /proc/meminfo); `None` where unknown.
pub fn available() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A size in readable units.
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Refuse `what` (the flags that ask for it) when it needs more than `limit` bytes.
pub fn refuse_over(what: &str, needs: u128, limit: u128) -> Result<()> {
    if needs <= limit {
        return Ok(());
    }
    Err(Error::Config {
        what: what.into(),
        why: format!(
            "would need at least {} of memory; this machine has {} available. Ask for less",
            human(needs),
            human(limit)
        ),
    })
}

/// Refuse `what` when it needs more than the memory available now (unknown: not checked).
pub fn check(what: &str, needs: u128) -> Result<()> {
    match available() {
        Some(limit) => refuse_over(what, needs, limit),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_and_refusals_name_the_flag() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert!(refuse_over("--epochs 5", 10, 10).is_ok());
        let e = refuse_over("--epochs 1000000000000", 24 << 40, 20 << 30).unwrap_err().to_string();
        assert!(e.contains("--epochs 1000000000000") && e.contains("24.0 TiB") && e.contains("20.0 GiB"), "{e}");
        assert!(available().is_some_and(|a| a > 0), "Linux reports MemAvailable");
    }

    /// Absurd requests are measured in u128, never overflowed (that the estimates are lower
    /// bounds of the planned arena is measured in `tests/train.rs`).
    #[test]
    fn absurd_steps_are_measured_not_overflowed() {
        // absurd requests are measured in u128, not overflowed
        let mut c = crate::models::FmnistSmall::CONFIG;
        c.local = c.local.map(|l| dino_runtime::config::CropConfig { count: usize::MAX, ..l });
        assert!(c.step_bytes(usize::MAX) > u64::MAX as u128);
    }
}
