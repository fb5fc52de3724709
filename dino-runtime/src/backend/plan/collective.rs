//! Buckets of all-reduce steps: when an executor reduces which buffers (PyTorch DDP's
//! gradient buckets, planned once instead of found by hooks at run time).
//!
//! ```text
//!   steps:  g7 ─AR─ … g6 ─AR─ … g5 ─AR─ │ adamw(g7) …        AR = an all-reduce step (copies its
//!                                        │                        source into its own buffer)
//!   bucket 0 = {AR(g7), AR(g6), AR(g5)}  └─ flush before the first step that reads a member,
//!                                           or before a member that would overflow the cap
//! ```
//!
//! Rules, in schedule order: an all-reduce step joins the open bucket; the bucket is reduced
//! (flushed) before the first step that reads one of its members, before an all-reduce step
//! that would take it past the byte cap (which then starts the next bucket), or at the end of
//! the run. A flush reduces every member in one call (CPU: packed into one buffer; NCCL: one
//! group), so a step with hundreds of small gradients makes a few calls; the members are
//! complete from `ready` on, so a device that can overlap starts the reduction there and waits
//! for it at `flush_before`.
use serde::{Deserialize, Serialize};

use super::build::{Step, Work};

/// DDP's default bucket size (`bucket_cap_mb = 25`).
pub const BUCKET_BYTES: usize = 25 << 20;

/// All-reduce steps reduced together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The all-reduce steps, in schedule order.
    pub members: Vec<usize>,
    /// The last member: from here on the bucket may be reduced.
    pub ready: usize,
    /// The step before which it must be reduced (`steps.len()`: at the end of the run).
    pub flush_before: usize,
    /// Elements in all (f32 each: reductions are kept in f32).
    pub elements: usize,
}

/// The buckets of `steps` (see the module documentation); `cap` in bytes (f32 elements).
pub fn buckets(steps: &[Step], cap: usize) -> Vec<Bucket> {
    let mut out = vec![];
    let mut open: Vec<usize> = vec![];
    let mut member = vec![false; steps.len()];
    let close = |open: &mut Vec<usize>, member: &mut Vec<bool>, at: usize, out: &mut Vec<Bucket>| {
        if open.is_empty() {
            return;
        }
        let members = std::mem::take(open);
        for &m in &members {
            member[m] = false;
        }
        let elements = members.iter().map(|&m| steps[m].out_len).sum();
        out.push(Bucket { ready: *members.last().expect("a member"), members, flush_before: at, elements });
    };
    for (i, s) in steps.iter().enumerate() {
        if s.srcs.iter().any(|&si| member[si]) {
            close(&mut open, &mut member, i, &mut out);
        }
        if matches!(s.work, Work::AllReduce(_)) {
            let bytes: usize = open.iter().map(|&m| steps[m].out_len * 4).sum();
            if !open.is_empty() && bytes + s.out_len * 4 > cap {
                close(&mut open, &mut member, i, &mut out);
            }
            open.push(i);
            member[i] = true;
        }
    }
    close(&mut open, &mut member, steps.len(), &mut out);
    out
}

/// Do `buckets` cover every all-reduce step of `steps` once, each flushed after it is ready
/// and before anything reads it, in order? (A plan from a file is checked with it.)
pub fn check(steps: &[Step], buckets: &[Bucket]) -> Result<(), String> {
    let mut seen = vec![false; steps.len()];
    let mut last_flush = 0;
    for (b, bk) in buckets.iter().enumerate() {
        let bad = |why: String| format!("bucket {b}: {why}");
        if bk.members.is_empty() || bk.flush_before > steps.len() || bk.flush_before < last_flush {
            return Err(bad(format!("{} members, flushed before step {}", bk.members.len(), bk.flush_before)));
        }
        last_flush = bk.flush_before;
        let mut elements = 0usize;
        for &m in &bk.members {
            if m >= steps.len() || !matches!(steps[m].work, Work::AllReduce(_)) || seen[m] || m >= bk.flush_before {
                return Err(bad(format!(
                    "member {m} is not an all-reduce step before the flush, or is in two buckets"
                )));
            }
            seen[m] = true;
            elements = elements.checked_add(steps[m].out_len).ok_or_else(|| bad("too many elements".into()))?;
            if let Some(r) = steps[m + 1..bk.flush_before].iter().position(|s| s.srcs.contains(&m)) {
                return Err(bad(format!("step {} reads member {m} before the bucket is reduced", m + 1 + r)));
            }
        }
        if elements != bk.elements || bk.ready != *bk.members.iter().max().expect("a member") {
            return Err(bad("its element count or ready step is wrong".into()));
        }
    }
    match steps.iter().enumerate().find(|(i, s)| matches!(s.work, Work::AllReduce(_)) && !seen[*i]) {
        Some((i, _)) => Err(format!("all-reduce step {i} is in no bucket")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use luminal::prelude::*;

    use super::*;
    use crate::backend::plan::Planner;
    use crate::dist::all_reduce;
    use crate::graph::{ops, View};

    /// `x -> 2x -> AR -> +1 (kept)`, `x -> 3x -> AR (kept)` and a 1000-element `z -> AR (kept)`.
    fn graph() -> Graph {
        let mut cx = Graph::new();
        let x = cx.named_tensor::<luminal::shape::R1<4>>("x");
        let z = cx.named_tensor::<luminal::shape::R1<1000>>("z");
        let xv = View { id: x.id, st: x.shape };
        let a = ops::scale(&mut cx, xv, 2.0);
        let a = all_reduce(&mut cx, a, "a", 1.0);
        let a1 = ops::shift(&mut cx, a, 1.0);
        let b = ops::scale(&mut cx, xv, 3.0);
        let b = all_reduce(&mut cx, b, "b", 0.5);
        let c = all_reduce(&mut cx, View { id: z.id, st: z.shape }, "z", 1.0);
        for id in [a1.id, b.id, c.id] {
            cx.no_delete.insert(id);
        }
        cx
    }

    #[test]
    fn buckets_close_before_a_reader_and_at_the_cap() {
        let cx = graph();
        let plan = Planner::new(&cx).plan(&cx).unwrap();
        let ar: Vec<usize> =
            (0..plan.steps.len()).filter(|&i| matches!(plan.steps[i].work, Work::AllReduce(_))).collect();
        assert_eq!(ar.len(), 3);
        check(&plan.steps, &plan.buckets).unwrap();
        // every reader of a member comes at or after its bucket's flush
        for b in &plan.buckets {
            for (i, s) in plan.steps.iter().enumerate() {
                if b.members.iter().any(|m| s.srcs.contains(m)) {
                    assert!(i >= b.flush_before, "step {i} reads a member of {b:?}");
                }
            }
        }
        // consumers of all-reduces are scheduled after every all-reduce: one bucket
        assert_eq!(plan.buckets.len(), 1, "{:?}", plan.buckets);
        assert_eq!(plan.buckets[0].elements, 1008);
        // a cap below the 1000-element buffer splits it off
        let small = buckets(&plan.steps, 100 * 4);
        assert!(small.len() >= 2, "{small:?}");
        check(&plan.steps, &small).unwrap();
    }

    #[test]
    fn altered_buckets_are_refused() {
        let cx = graph();
        let plan = Planner::new(&cx).plan(&cx).unwrap();
        let reader = (0..plan.steps.len())
            .find(|&i| plan.buckets[0].members.iter().any(|m| plan.steps[i].srcs.contains(m)))
            .expect("a reader");
        let mut late = plan.buckets.clone();
        late[0].flush_before = reader + 1;
        assert!(check(&plan.steps, &late).unwrap_err().contains("before the bucket is reduced"));
        let mut missing = plan.buckets.clone();
        missing[0].members.pop();
        assert!(check(&plan.steps, &missing).is_err());
        assert!(check(&plan.steps, &[]).unwrap_err().contains("in no bucket"));
    }
}
