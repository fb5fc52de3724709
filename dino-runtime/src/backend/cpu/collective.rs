//! A data-parallel step on the CPU: the plan's all-reduce steps, gathered in buckets
//! ([`crate::backend::plan::collective`]), are summed over the ranks by the run's
//! [`Collective`] when the last member of a bucket is written, then scaled in place.
//!
//! ```text
//!   backward ... g3  g2  g1   (members of bucket b, in the arena or kept)
//!                 \   |   /
//!                  pack (one buffer, members in plan order)
//!                     |
//!          Collective::all_reduce_sum (rank order: equal bits on every rank)
//!                     |
//!                  unpack, x scale (bf16-rounded where the step stores bf16)
//!                 /   |   \
//!               g3'  g2'  g1'  -> their first readers (the optimizer)
//! ```
use crate::backend::plan::precision::round_bf16_slice;
use crate::backend::plan::{Bucket, DType, Loc, Plan, Work};
use crate::dist::Collective;
use crate::error::Result;

/// Sum bucket `b`'s buffers over the ranks: packed into one buffer, one call, each member
/// scaled by its step's factor on the way back.
pub(super) fn reduce_bucket(
    group: &dyn Collective,
    plan: &Plan,
    b: usize,
    arena: &mut [f32],
    kept: &mut [Vec<f32>],
) -> Result<()> {
    let bucket: &Bucket = &plan.buckets[b];
    let arena = arena.as_mut_ptr();
    let mut pack = Vec::with_capacity(bucket.elements);
    for &m in &bucket.members {
        pack.extend_from_slice(&member(plan, arena, kept, m)[..plan.steps[m].out_len]);
    }
    let what = format!(
        "all-reduce of bucket {} of {} ({} tensors, {:.2} MB: {}...)",
        b + 1,
        plan.buckets.len(),
        bucket.members.len(),
        bucket.elements as f64 * 4e-6,
        match &plan.steps[bucket.members[0]].work {
            Work::AllReduce(r) => r.name.as_str(),
            _ => "?",
        }
    );
    group.all_reduce_sum(&what, &mut pack)?;
    let mut at = 0;
    for &m in &bucket.members {
        let n = plan.steps[m].out_len;
        let scale = match &plan.steps[m].work {
            Work::AllReduce(r) => r.scale,
            _ => unreachable!("a bucket holds all-reduce steps"),
        };
        let dst = &mut member(plan, arena, kept, m)[..n];
        for (d, x) in dst.iter_mut().zip(&pack[at..at + n]) {
            *d = x * scale;
        }
        if plan.steps[m].dtype == DType::Bf16 {
            round_bf16_slice(dst);
        }
        at += n;
    }
    Ok(())
}

/// The buffer of all-reduce step `m` (in the arena at `arena`, or kept).
fn member<'a>(plan: &Plan, arena: *mut f32, kept: &'a mut [Vec<f32>], m: usize) -> &'a mut [f32] {
    let s = &plan.steps[m];
    match s.loc {
        // SAFETY: a bucket's members are distinct buffers, alive until their first reader, which
        // has not run yet (collective.rs); arena offsets lie inside the arena (planner or
        // validate), and no other slice of the arena is held while a bucket is reduced.
        Loc::Arena(off) => unsafe {
            std::slice::from_raw_parts_mut(arena.add(off / DType::F32.size()), s.out_len.max(1))
        },
        Loc::Kept(k) => &mut kept[k][..],
        Loc::Input(_) => unreachable!("an all-reduce step writes its own buffer"),
    }
}

#[cfg(test)]
mod tests {
    use luminal::prelude::*;

    use crate::backend::cpu::{CpuCompiler, CpuRuntime};
    use crate::backend::executor::Executor;
    use crate::graph::{data, Handles};

    /// Two ranks (threads) run `y = AR(x * w) / 2 + 1` and `c = AR(x)`: every rank gets the
    /// same sums, in buckets; without a process group the plan refuses to run.
    #[test]
    fn all_reduce_steps_sum_over_the_ranks() {
        let build = || {
            let mut cx = Box::new(Graph::new());
            let x = cx.named_tensor::<luminal::shape::R1<3>>("x");
            let w = cx.named_tensor::<luminal::shape::R1<3>>("w");
            let p = x * w;
            let ar = crate::dist::all_reduce(&mut cx, crate::graph::View { id: p.id, st: p.shape }, "p", 0.5);
            let y = crate::graph::ops::shift(&mut cx, ar, 1.0);
            let c = crate::dist::op::all_reduce_tensor(x, "x");
            cx.no_delete.insert(y.id);
            cx.no_delete.insert(c.id);
            let mut h = Handles(vec![y.id, c.id]);
            cx.compile(<CpuCompiler>::default(), &mut h);
            (cx, x.id, w.id, h)
        };
        let ranks = crate::dist::LocalGroup::ranks(2, std::time::Duration::from_secs(30));
        let outs: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|sc| {
            let jobs: Vec<_> = ranks
                .into_iter()
                .map(|r| {
                    sc.spawn(move || {
                        let k = crate::dist::Collective::rank(&r) as f32;
                        let (mut cx, x, w, h) = build();
                        let mut rt = CpuRuntime::new(&cx);
                        data::set(&mut cx, x, vec![1.0 + k, 2.0, 3.0]);
                        data::set(&mut cx, w, vec![2.0; 3]);
                        rt.set_collective(std::sync::Arc::new(r)).unwrap();
                        rt.execute(&mut cx).unwrap();
                        (data::take(&mut cx, h.0[0]).unwrap(), data::take(&mut cx, h.0[1]).unwrap())
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        for (y, c) in &outs {
            // x * w summed over the ranks: (2 + 4, 4 + 4, 6 + 6), halved, plus 1
            assert_eq!(y, &vec![4.0, 5.0, 7.0]);
            assert_eq!(c, &vec![3.0, 4.0, 6.0]);
        }
        let (mut cx, x, w, _) = build();
        let mut rt = CpuRuntime::new(&cx);
        data::set(&mut cx, x, vec![1.0; 3]);
        data::set(&mut cx, w, vec![1.0; 3]);
        let e = rt.execute(&mut cx).unwrap_err().to_string();
        assert!(e.contains("sums 2 buffers over the ranks") && e.contains("no process group"), "{e}");
        assert!(data::get(&cx, x).is_some() && data::get(&cx, w).is_some(), "the inputs are given back");
    }
}
