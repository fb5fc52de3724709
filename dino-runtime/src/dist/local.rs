//! Ranks as threads of one process: the collectives of a data-parallel run without MPI, for
//! tests (an N-rank run next to a 1-rank run in one `cargo test`) and for trying a world size
//! on one machine.
//!
//! ```text
//!   rank 0 ──deposit──┐                 ┌──► every rank reads all deposits (rank order)
//!   rank 1 ──deposit──┼─► round (gen g) ┤
//!   rank 2 ──deposit──┘                 └──► the last reader opens round g + 1
//! ```
//!
//! Each collective is one round of an all-gather; the others are built on it and sum in rank
//! order, as [`super::mpi`] does. A rank that waits longer than the timeout, or finds that a
//! rank it waits for has gone (its handle dropped) or aborted, gets an error naming them.
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{bytes_f32, f32_bytes, sum_in_rank_order, Collective};
use crate::error::{Error, Result};

/// The shared state of a round.
struct Round {
    gen: u64,
    deposits: Vec<Option<Vec<u8>>>,
    /// The deposits of a complete round, until every rank has read them.
    complete: Option<Arc<Vec<Vec<u8>>>>,
    read: usize,
    /// Ranks whose handle was dropped.
    gone: Vec<bool>,
    /// A rank that called [`Collective::abort`].
    aborted: Option<usize>,
}

struct Shared {
    n: usize,
    timeout: Duration,
    round: Mutex<Round>,
    cv: Condvar,
}

/// A group of `n` ranks in one process; [`LocalGroup::ranks`] hands out one handle per rank.
pub struct LocalGroup;

impl LocalGroup {
    /// `n` rank handles sharing one group; collectives wait at most `timeout` for the others.
    pub fn ranks(n: usize, timeout: Duration) -> Vec<LocalRank> {
        assert!(n > 0, "a group has at least one rank");
        let shared = Arc::new(Shared {
            n,
            timeout,
            round: Mutex::new(Round {
                gen: 0,
                deposits: vec![None; n],
                complete: None,
                read: 0,
                gone: vec![false; n],
                aborted: None,
            }),
            cv: Condvar::new(),
        });
        (0..n).map(|rank| LocalRank { rank, shared: Arc::clone(&shared) }).collect()
    }
}

/// One rank of a [`LocalGroup`] (send it to the thread that runs the rank).
pub struct LocalRank {
    rank: usize,
    shared: Arc<Shared>,
}

impl LocalRank {
    fn err(&self, what: &str, why: String) -> Error {
        Error::Collective { op: what.into(), rank: self.rank, world: self.shared.n, why }
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // a rank that panicked holding the lock left the round as it was: go on with it
        self.shared.round.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why waiting on `r` cannot end, if it cannot: an aborted rank, or a rank gone before
    /// depositing.
    fn hopeless(&self, r: &Round, what: &str) -> Option<Error> {
        if let Some(a) = r.aborted {
            return Some(self.err(what, format!("rank {a} aborted the run")));
        }
        let gone: Vec<String> = (0..self.shared.n)
            .filter(|&k| r.gone[k] && r.deposits[k].is_none() && r.complete.is_none())
            .map(|k| k.to_string())
            .collect();
        (!gone.is_empty())
            .then(|| self.err(what, format!("rank(s) {} left the run without joining it", gone.join(", "))))
    }

    fn gather(&self, what: &str, mine: &[u8]) -> Result<Arc<Vec<Vec<u8>>>> {
        let t0 = Instant::now();
        let mut r = self.lock();
        // the previous round must be read by everyone before this one starts
        while r.complete.is_some() {
            if let Some(e) = self.hopeless(&r, what) {
                return Err(e);
            }
            r = self.wait(r, t0, what)?;
        }
        let gen = r.gen;
        r.deposits[self.rank] = Some(mine.to_vec());
        if r.deposits.iter().all(Option::is_some) {
            let all: Vec<Vec<u8>> = r.deposits.iter_mut().map(|d| d.take().expect("deposited")).collect();
            r.complete = Some(Arc::new(all));
            self.shared.cv.notify_all();
        }
        while !(r.gen == gen && r.complete.is_some()) {
            if let Some(e) = self.hopeless(&r, what) {
                return Err(e);
            }
            r = self.wait(r, t0, what)?;
        }
        let out = Arc::clone(r.complete.as_ref().expect("complete"));
        r.read += 1;
        if r.read == self.shared.n {
            r.complete = None;
            r.read = 0;
            r.gen += 1;
            self.shared.cv.notify_all();
        }
        Ok(out)
    }

    fn wait<'a>(&self, r: MutexGuard<'a, Round>, t0: Instant, what: &str) -> Result<MutexGuard<'a, Round>> {
        let left = self.shared.timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            let missing: Vec<String> =
                (0..self.shared.n).filter(|&k| r.deposits[k].is_none()).map(|k| k.to_string()).collect();
            return Err(self.err(
                what,
                format!(
                    "waited {:.1} s for rank(s) {} (stuck, dead or far behind)",
                    self.shared.timeout.as_secs_f64(),
                    missing.join(", ")
                ),
            ));
        }
        let (g, _) = self.shared.cv.wait_timeout(r, left).unwrap_or_else(|p| p.into_inner());
        Ok(g)
    }
}

impl Drop for LocalRank {
    fn drop(&mut self) {
        let mut r = self.lock();
        r.gone[self.rank] = true;
        self.shared.cv.notify_all();
    }
}

impl Collective for LocalRank {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.shared.n
    }

    fn describe(&self) -> String {
        format!("threads of one process: rank {} of {}", self.rank, self.shared.n)
    }

    fn all_reduce_sum(&self, what: &str, buf: &mut [f32]) -> Result<()> {
        let all = self.gather(what, &f32_bytes(buf))?;
        let parts: Vec<Vec<f32>> = all.iter().map(|b| bytes_f32(b).expect("f32 bytes")).collect();
        if let Some(k) = parts.iter().position(|p| p.len() != buf.len()) {
            return Err(self.err(what, format!("rank {k} reduces {} values, this rank {}", parts[k].len(), buf.len())));
        }
        let refs: Vec<&[f32]> = parts.iter().map(Vec::as_slice).collect();
        sum_in_rank_order(&refs, buf);
        Ok(())
    }

    fn all_gather_bytes(&self, what: &str, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(self.gather(what, mine)?.as_ref().clone())
    }

    fn broadcast_bytes(&self, what: &str, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        if root >= self.shared.n {
            return Err(self.err(what, format!("no rank {root}")));
        }
        let mine = if self.rank == root { buf.clone() } else { vec![] };
        *buf = self.gather(what, &mine)?[root].clone();
        Ok(())
    }

    /// Marks the group aborted (every rank waiting or arriving gets an error naming this one),
    /// then unwinds this rank's thread.
    fn abort(&self, code: i32) -> ! {
        {
            let mut r = self.lock();
            r.aborted.get_or_insert(self.rank);
            self.shared.cv.notify_all();
        }
        panic!("rank {} aborted the run (status {code})", self.rank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::{all_gather_f32, broadcast_f32};

    fn run<T: Send + 'static>(n: usize, f: impl Fn(LocalRank) -> T + Send + Sync + 'static) -> Vec<T> {
        let f = Arc::new(f);
        let handles: Vec<_> = LocalGroup::ranks(n, Duration::from_secs(20))
            .into_iter()
            .map(|r| {
                let f = Arc::clone(&f);
                std::thread::spawn(move || f(r))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("rank thread")).collect()
    }

    #[test]
    fn collectives_agree_across_threads_and_rounds() {
        let out = run(3, |r| {
            let k = r.rank() as f32;
            let mut results = vec![];
            for round in 0..50 {
                let mut v = vec![k + round as f32, 1.0];
                r.all_reduce_sum("sum", &mut v).unwrap();
                results.push(v);
            }
            let g = all_gather_f32(&r, "gather", &vec![k; r.rank() + 1]).unwrap();
            let mut b = if r.rank() == 2 { vec![9.0, 8.0] } else { vec![] };
            broadcast_f32(&r, "bcast", &mut b, 2).unwrap();
            (results, g, b)
        });
        for (results, g, b) in &out {
            for (round, v) in results.iter().enumerate() {
                assert_eq!(v, &vec![3.0 + 3.0 * round as f32, 3.0]);
            }
            assert_eq!(g, &vec![vec![0.0], vec![1.0, 1.0], vec![2.0, 2.0, 2.0]]);
            assert_eq!(b, &vec![9.0, 8.0]);
        }
    }

    #[test]
    fn the_sum_is_in_rank_order_on_every_rank() {
        let vals = [1.0f32, 1e8, -1e8];
        let out = run(3, move |r| {
            let mut v = [vals[r.rank()]];
            r.all_reduce_sum("sum", &mut v).unwrap();
            v[0].to_bits()
        });
        assert!(out.iter().all(|b| *b == 0f32.to_bits()), "{out:?}");
    }

    #[test]
    fn a_missing_rank_is_a_named_error_not_a_hang() {
        let mut ranks = LocalGroup::ranks(3, Duration::from_millis(300)).into_iter();
        let (r0, r1, r2) = (ranks.next().unwrap(), ranks.next().unwrap(), ranks.next().unwrap());
        // rank 2 never comes: rank 0 and 1 time out naming it
        let t = std::thread::spawn(move || r1.all_reduce_sum("grads", &mut [1.0]).unwrap_err().to_string());
        let e0 = r0.all_reduce_sum("grads", &mut [1.0]).unwrap_err().to_string();
        let e1 = t.join().unwrap();
        assert!(e0.contains("rank 0 of 3: grads: waited 0.3 s for rank(s) 2"), "{e0}");
        assert!(e1.contains("rank(s) 2"), "{e1}");
        drop(r2);
        // a rank that is gone is named at once
        let mut ranks = LocalGroup::ranks(2, Duration::from_secs(30)).into_iter();
        let (a, b) = (ranks.next().unwrap(), ranks.next().unwrap());
        drop(b);
        let t0 = Instant::now();
        let e = a.all_gather_bytes("config", b"x").unwrap_err().to_string();
        assert!(e.contains("rank(s) 1 left the run"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_abort_ends_the_waits_of_the_others() {
        let mut ranks = LocalGroup::ranks(2, Duration::from_secs(30)).into_iter();
        let (a, b) = (ranks.next().unwrap(), ranks.next().unwrap());
        let t = std::thread::spawn(move || a.all_reduce_sum("grads", &mut [1.0]).unwrap_err().to_string());
        std::thread::sleep(Duration::from_millis(50));
        let aborted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.abort(3)));
        assert!(aborted.is_err());
        let e = t.join().unwrap();
        assert!(e.contains("rank 1 aborted the run"), "{e}");
    }
}
