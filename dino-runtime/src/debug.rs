//! The `DINO_DEBUG` knob: 1 = pass and plan summaries, 2 = per-kernel timings, 3 = the
//! programs of generated kernels. Read once.
use std::sync::OnceLock;

/// The `DINO_DEBUG` level (0 when unset or not a number).
pub fn level() -> u32 {
    static LEVEL: OnceLock<u32> = OnceLock::new();
    *LEVEL.get_or_init(|| std::env::var("DINO_DEBUG").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}
