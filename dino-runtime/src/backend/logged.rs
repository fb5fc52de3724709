//! A compiler pass wrapper that reports what the pass did (`DINO_DEBUG` >= 1).
use std::time::Instant;

use luminal::prelude::*;

/// Runs `C` and, with `DINO_DEBUG` >= 1, prints its name, time and node counts.
#[derive(Debug, Default)]
pub struct Logged<C>(pub C);

impl<C: Compiler + std::fmt::Debug> Compiler for Logged<C> {
    fn compile<T: ToIdsMut>(&self, cx: &mut Graph, remap: T) {
        let before = cx.graph.node_count();
        let t = Instant::now();
        self.0.compile(cx, remap);
        if crate::debug::level() >= 1 {
            eprintln!(
                "[dino] {:?}: {before} -> {} nodes in {:.3} s",
                self.0,
                cx.graph.node_count(),
                t.elapsed().as_secs_f64()
            );
        }
    }
}
