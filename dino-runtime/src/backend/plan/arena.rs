//! Static memory planning: every intermediate buffer of a graph gets a fixed offset in one
//! arena, reused by buffers whose lifetimes do not overlap.
//!
//! Greedy by size (largest first), each buffer at the lowest offset free over its whole
//! lifetime, the usual offline allocator of inference runtimes. Sizes and offsets are in bytes,
//! offsets 64-byte aligned, so buffers of any storage dtype share one arena.

/// A buffer to place: `len` bytes live from step `first` to step `last` inclusive.
#[derive(Debug, Clone, Copy)]
pub struct Interval {
    pub len: usize,
    pub first: usize,
    pub last: usize,
}

/// Alignment of offsets, in bytes.
pub const ALIGN: usize = 64;

/// Offsets (in bytes) of each interval and the arena size.
pub fn plan(intervals: &[Interval]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..intervals.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(intervals[i].len), intervals[i].first));
    let mut offsets = vec![0usize; intervals.len()];
    // placed buffers, kept sorted by offset
    let mut placed: Vec<(usize, usize, usize)> = vec![]; // (offset, end, index)
    let mut size = 0;
    for i in order {
        let it = intervals[i];
        let len = it.len.div_ceil(ALIGN) * ALIGN;
        let mut at = 0;
        for &(off, end, j) in &placed {
            let o = intervals[j];
            if o.last < it.first || it.last < o.first {
                continue; // lifetimes do not overlap
            }
            if off >= at + len {
                break; // the gap before this one fits
            }
            at = at.max(end);
        }
        offsets[i] = at;
        size = size.max(at + len);
        let pos = placed.partition_point(|p| p.0 < at);
        placed.insert(pos, (at, at + len, i));
    }
    (offsets, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(iv: &[Interval], offs: &[usize]) {
        for a in 0..iv.len() {
            for b in a + 1..iv.len() {
                let (x, y) = (iv[a], iv[b]);
                if x.last < y.first || y.last < x.first {
                    continue;
                }
                let disjoint = offs[a] + x.len <= offs[b] || offs[b] + y.len <= offs[a];
                assert!(disjoint, "buffers {a} and {b} overlap in time and space");
            }
        }
    }

    #[test]
    fn reuses_memory_of_dead_buffers() {
        let iv = [
            Interval { len: 400, first: 0, last: 1 },
            Interval { len: 400, first: 2, last: 3 },
            Interval { len: 200, first: 1, last: 2 },
        ];
        let (offs, size) = plan(&iv);
        check(&iv, &offs);
        assert_eq!(offs[0], offs[1], "second buffer reuses the first one's memory");
        assert!(size <= 704, "arena {size}: 448 + 256 bytes after 64-byte alignment");
    }

    #[test]
    fn random_lifetimes_never_overlap() {
        let mut s = 12345u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let iv: Vec<Interval> = (0..300)
            .map(|_| {
                let first = (next() % 200) as usize;
                Interval { len: 1 + (next() % 1000) as usize, first, last: first + (next() % 30) as usize }
            })
            .collect();
        let (offs, _) = plan(&iv);
        check(&iv, &offs);
    }
}
