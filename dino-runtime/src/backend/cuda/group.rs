//! Sibling products run as one call: the q, k and v projections of an attention layer (and
//! their input gradients) are three products of the same shape, each too small to fill an
//! H100/H200 alone (a 384 x 25216 output is about 4.5 waves of tiles). Independent products
//! with the same call shape are gathered into one pointer-array `cublasSgemmBatched` at the
//! first one's place in the schedule.
//!
//! The memory plan made for the CPU reuses a product's output region as soon as its reader
//! is done (q, k and v are often written to the same offset one after the other), so a
//! product moved earlier cannot keep its arena region: each moved product writes a private
//! buffer instead, which its readers then read. [`private_slots`] shares those buffers
//! between groups whose outputs are not alive at the same time.
use super::blas::BlasCall;

/// What the grouping needs to know of one plan step.
#[derive(Debug, Clone)]
pub struct StepView {
    /// The step's output region in the arena (`offset`, `len`), or `None` (an input, a kept
    /// output: separate buffers). Only arena outputs are grouped.
    pub out: Option<(usize, usize)>,
    /// Step indices of its sources.
    pub srcs: Vec<usize>,
    /// For a product that may join a group: its single call.
    pub call: Option<BlasCall>,
}

/// Products of at least this many output elements are grouped (smaller ones fill the GPU
/// badly anyway and would lose cuBLAS's split-K kernels).
pub const GROUP_MIN_OUTPUT: usize = 1 << 20;

/// The most products in one group.
pub const GROUP_MAX: usize = 4;

/// How far ahead in the schedule a sibling is looked for.
const WINDOW: usize = 24;

/// Same call shape (which operand is X and which Y may differ: pointers are per matrix).
fn same_shape(a: &BlasCall, b: &BlasCall) -> bool {
    (a.trans_x, a.trans_y, a.rows, a.cols, a.k, a.ld_x, a.ld_y, a.ld_c)
        == (b.trans_x, b.trans_y, b.rows, b.cols, b.k, b.ld_x, b.ld_y, b.ld_c)
}

/// Groups of sibling products: each a list of step indices, the first being where the group
/// runs (in its own arena region); the others run there too, into private buffers. A product
/// joins when its inputs are all computed before the group's step.
pub fn sibling_groups(steps: &[StepView], min_output: usize) -> Vec<Vec<usize>> {
    let eligible = |k: usize| {
        steps[k].call.as_ref().is_some_and(|c| (c.rows as usize) * (c.cols as usize) >= min_output)
            && steps[k].out.is_some()
    };
    let mut taken = vec![false; steps.len()];
    let mut groups = vec![];
    for i in 0..steps.len() {
        if taken[i] || !eligible(i) {
            continue;
        }
        let call = steps[i].call.expect("eligible");
        let mut members = vec![i];
        for j in i + 1..steps.len().min(i + 1 + WINDOW) {
            if members.len() == GROUP_MAX {
                break;
            }
            if !taken[j]
                && eligible(j)
                && same_shape(&call, steps[j].call.as_ref().expect("eligible"))
                && steps[j].srcs.iter().all(|&s| s < i)
            {
                members.push(j);
            }
        }
        if members.len() > 1 {
            for &m in &members {
                taken[m] = true;
            }
            groups.push(members);
        }
    }
    groups
}

/// Private output buffers for the moved members of `groups` (all but the first of each):
/// `(member, slot)` pairs and each slot's length. A slot is reused by a later group once
/// every reader of its previous member has run.
pub fn private_slots(steps: &[StepView], groups: &[Vec<usize>]) -> (Vec<(usize, usize)>, Vec<usize>) {
    // the last step reading each step's output
    let mut last_use = vec![0usize; steps.len()];
    for (k, s) in steps.iter().enumerate() {
        for &src in &s.srcs {
            last_use[src] = last_use[src].max(k);
        }
    }
    let mut slots: Vec<(usize, usize)> = vec![]; // (length, busy until step)
    let mut assigned = vec![];
    for g in groups {
        let at = g[0];
        for &m in &g[1..] {
            let len = steps[m].out.expect("grouped outputs are in the arena").1;
            let free = slots.iter().position(|&(l, busy)| l == len && busy < at);
            let slot = match free {
                Some(k) => k,
                None => {
                    slots.push((len, 0));
                    slots.len() - 1
                }
            };
            slots[slot].1 = last_use[m].max(m);
            assigned.push((m, slot));
        }
    }
    (assigned, slots.iter().map(|s| s.0).collect())
}

#[cfg(test)]
mod tests {
    use super::super::blas::{Operand, Trans};
    use super::*;

    fn call() -> BlasCall {
        BlasCall {
            x: Operand::A,
            y: Operand::B,
            trans_x: Trans::N,
            trans_y: Trans::N,
            rows: 4,
            cols: 4,
            k: 4,
            ld_x: 4,
            ld_y: 4,
            ld_c: 4,
            off_x: 0,
            off_y: 0,
            off_c: 0,
            batch: 1,
            stride_x: 0,
            stride_y: 0,
            stride_c: 0,
            beta: 0.0,
        }
    }

    fn input() -> StepView {
        StepView { out: None, srcs: vec![], call: None }
    }

    fn gemm(out: usize, srcs: Vec<usize>) -> StepView {
        StepView { out: Some((out, 16)), srcs, call: Some(call()) }
    }

    fn other(out: usize, srcs: Vec<usize>) -> StepView {
        StepView { out: Some((out, 16)), srcs, call: None }
    }

    #[test]
    fn independent_products_of_one_shape_group() {
        // x, w: inputs; three products of x (q, k, v), each read right after it, all written
        // at offset 0 as the CPU plan does
        let steps = vec![
            input(),
            input(),
            gemm(0, vec![0, 1]),
            other(16, vec![2]),
            gemm(0, vec![0, 1]),
            other(32, vec![4]),
            gemm(0, vec![0, 1]),
            other(48, vec![6]),
        ];
        let groups = sibling_groups(&steps, 0);
        assert_eq!(groups, vec![vec![2, 4, 6]]);
        // the two moved products get their own buffers (both alive at once)
        let (slots, lens) = private_slots(&steps, &groups);
        assert_eq!(slots, vec![(4, 0), (6, 1)]);
        assert_eq!(lens, vec![16, 16]);
        // too small for the default threshold
        assert!(sibling_groups(&steps, GROUP_MIN_OUTPUT).is_empty());
    }

    #[test]
    fn a_product_reading_an_earlier_product_waits() {
        let steps = vec![input(), input(), gemm(0, vec![0, 1]), gemm(16, vec![2, 1])];
        assert!(sibling_groups(&steps, 0).is_empty());
    }

    #[test]
    fn private_buffers_are_reused_once_read() {
        // two groups of two; the first group's moved output (step 2) is last read at step 4,
        // before the second group runs at step 5: one buffer serves both
        let steps = vec![
            input(),
            gemm(0, vec![0, 0]),
            gemm(0, vec![0, 0]),
            other(16, vec![1]),
            other(32, vec![2]),
            gemm(0, vec![3, 0]), // reads step 3: not a sibling of the first two
            gemm(0, vec![3, 0]),
            other(48, vec![6]),
        ];
        let groups = sibling_groups(&steps, 0);
        assert_eq!(groups, vec![vec![1, 2], vec![5, 6]]);
        let (slots, lens) = private_slots(&steps, &groups);
        assert_eq!(slots, vec![(2, 0), (6, 0)]);
        assert_eq!(lens, vec![16]);
        // read later (step 7 reads step 2): a second buffer
        let mut later = steps.clone();
        later[7].srcs = vec![2, 6];
        let (slots, lens) = private_slots(&later, &groups);
        assert_eq!(slots, vec![(2, 0), (6, 1)]);
        assert_eq!(lens, vec![16, 16]);
    }

    #[test]
    fn shapes_must_agree_and_groups_are_bounded() {
        let mut odd = gemm(64, vec![0, 0]);
        odd.call.as_mut().unwrap().k = 8;
        let steps: Vec<StepView> = std::iter::once(input())
            .chain((0..6).map(|m| gemm(16 * m, vec![0, 0])))
            .chain(std::iter::once(odd))
            .collect();
        let groups = sibling_groups(&steps, 0);
        assert_eq!(groups, vec![vec![1, 2, 3, 4], vec![5, 6]]);
    }
}
