//! The collectives of a run over MPI processes (rsmpi on the system's MPI; feature `mpi`).
//!
//! ```text
//!   all_reduce_sum (fixed order, bandwidth of a reduce-scatter + all-gather):
//!     buf ──split in `world` chunks──► Alltoallv: rank j gets chunk j of every rank
//!         ──► rank j sums its chunk in rank order ──► Allgatherv: every chunk to every rank
//! ```
//!
//! MPI's own `MPI_Allreduce` picks its summation order by message size and topology, so its
//! bits may differ between world sizes and even between ranks of one run; the two calls above
//! sum every element in rank order on one rank and hand the same bits to all. A watchdog thread
//! ends every rank (`MPI_Abort`) when one collective has waited longer than the timeout for the
//! others, naming the operation: a rank that died or hangs never leaves the rest hanging. (A rank
//! that dies is also noticed by `mpirun`, which ends the job and names it.)
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use super::{sum_in_rank_order, Collective};
use crate::error::{Error, Result};

/// The largest count one MPI call moves (MPI counts are `int`).
const MAX_COUNT: usize = 1 << 30;

/// The collective in flight and since when.
struct Watch {
    in_flight: Mutex<Option<(String, Instant)>>,
    timeout: Duration,
    rank: usize,
    world: usize,
}

/// Clears the watch when the collective returns.
struct InFlight<'a>(&'a Watch);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        *self.0.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Watch {
    fn enter(&self, what: &str) -> InFlight<'_> {
        *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = Some((what.to_string(), Instant::now()));
        InFlight(self)
    }

    /// Check once a second; end the run when a collective has waited too long.
    fn run(self: Arc<Self>) {
        let tick = (self.timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            std::thread::sleep(tick);
            let late = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .filter(|(_, t0)| t0.elapsed() > self.timeout)
                .map(|(w, _)| w.clone());
            if let Some(what) = late {
                eprintln!(
                    "error: rank {} of {}: {what}: no answer from the other ranks in {:.0} s (one died, hangs, or \
                     is far behind; the launcher's messages name a rank that died): ending every rank. \
                     DINO_DIST_TIMEOUT=<seconds> waits longer",
                    self.rank,
                    self.world,
                    self.timeout.as_secs_f64()
                );
                // SAFETY: MPI was initialized with MPI_THREAD_MULTIPLE (checked in `init`), so
                // this thread may call MPI while the main one waits inside a collective.
                unsafe {
                    mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 3);
                }
                std::process::exit(3);
            }
        }
    }
}

/// The ranks of an MPI launch (`mpirun -n N dino ...`). See the module documentation.
pub struct MpiGroup {
    // dropped last: finalizes MPI
    _universe: Universe,
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    watch: Arc<Watch>,
    library: String,
}

// SAFETY: MPI was initialized with MPI_THREAD_MULTIPLE (`init` refuses less), so its handles
// may be used from any thread, and concurrent calls are the library's to serialize.
unsafe impl Send for MpiGroup {}
unsafe impl Sync for MpiGroup {}

fn counts_of(n: usize, parts: usize) -> (Vec<Count>, Vec<Count>) {
    let base = n / parts;
    let extra = n % parts;
    let counts: Vec<Count> = (0..parts).map(|j| (base + (j < extra) as usize) as Count).collect();
    let mut displs = Vec::with_capacity(parts);
    let mut at = 0;
    for &c in &counts {
        displs.push(at);
        at += c;
    }
    (counts, displs)
}

impl MpiGroup {
    /// Initialize MPI (once per process) with a watchdog of `timeout` on every collective.
    pub fn init(timeout: Duration) -> Result<MpiGroup> {
        let fail = |why: String| Error::Collective { op: "MPI initialization".into(), rank: 0, world: 0, why };
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or_else(|| fail("MPI is already initialized in this process".into()))?;
        if threading < mpi::Threading::Multiple {
            return Err(fail(format!(
                "this MPI gives thread level {threading:?}; the collective watchdog needs MPI_THREAD_MULTIPLE"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let watch = Arc::new(Watch { in_flight: Mutex::new(None), timeout, rank, world: size });
        let w = Arc::clone(&watch);
        std::thread::Builder::new()
            .name("dino-collective-watchdog".into())
            .spawn(move || w.run())
            .map_err(|e| fail(format!("starting the watchdog thread: {e}")))?;
        let library = mpi::environment::library_version()
            .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
            .unwrap_or_else(|_| "MPI".into());
        Ok(MpiGroup { _universe: universe, world, rank, size, watch, library })
    }

    /// `buf` summed in rank order: see the module documentation (one part of at most
    /// [`MAX_COUNT`] elements per call).
    fn reduce_part(&self, buf: &mut [f32]) {
        let n = self.size;
        let (counts, displs) = counts_of(buf.len(), n);
        let mine = counts[self.rank] as usize;
        // chunk `rank` of every rank, rank after rank
        let mut recv = vec![0f32; mine * n];
        let rcounts: Vec<Count> = vec![mine as Count; n];
        let rdispls: Vec<Count> = (0..n).map(|j| (j * mine) as Count).collect();
        {
            let send = Partition::new(&buf[..], &counts[..], &displs[..]);
            let mut r = PartitionMut::new(&mut recv[..], &rcounts[..], &rdispls[..]);
            self.world.all_to_all_varcount_into(&send, &mut r);
        }
        let parts: Vec<&[f32]> = recv.chunks(mine.max(1)).take(n).collect();
        let mut chunk = vec![0f32; mine];
        if mine > 0 {
            sum_in_rank_order(&parts, &mut chunk);
        }
        let mut all = PartitionMut::new(buf, &counts[..], &displs[..]);
        self.world.all_gather_varcount_into(&chunk[..], &mut all);
    }

    fn err(&self, what: &str, why: String) -> Error {
        Error::Collective { op: what.into(), rank: self.rank, world: self.size, why }
    }
}

impl Collective for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.size
    }

    fn describe(&self) -> String {
        format!("{}: rank {} of {}", self.library, self.rank, self.size)
    }

    fn all_reduce_sum(&self, what: &str, buf: &mut [f32]) -> Result<()> {
        let _w = self.watch.enter(what);
        // every rank must reduce the same length: check it first (a cheap all-gather)
        let mut lens = vec![0u64; self.size];
        self.world.all_gather_into(&(buf.len() as u64), &mut lens[..]);
        if let Some(k) = lens.iter().position(|&l| l != buf.len() as u64) {
            return Err(self.err(what, format!("rank {k} reduces {} values, this rank {}", lens[k], buf.len())));
        }
        for part in buf.chunks_mut(MAX_COUNT) {
            self.reduce_part(part);
        }
        Ok(())
    }

    fn all_gather_bytes(&self, what: &str, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let _w = self.watch.enter(what);
        let mut lens = vec![0u64; self.size];
        self.world.all_gather_into(&(mine.len() as u64), &mut lens[..]);
        let total: u64 = lens.iter().sum();
        if lens.iter().any(|&l| l as usize > MAX_COUNT) {
            return Err(self.err(what, format!("{total} bytes: over the {MAX_COUNT} bytes one gather moves")));
        }
        let counts: Vec<Count> = lens.iter().map(|&l| l as Count).collect();
        let mut displs = Vec::with_capacity(self.size);
        let mut at: Count = 0;
        for &c in &counts {
            displs.push(at);
            at = at.checked_add(c).ok_or_else(|| self.err(what, format!("{total} bytes in one gather")))?;
        }
        let mut all = vec![0u8; total as usize];
        {
            let mut p = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(mine, &mut p);
        }
        Ok(counts.iter().zip(&displs).map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec()).collect())
    }

    fn broadcast_bytes(&self, what: &str, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        if root >= self.size {
            return Err(self.err(what, format!("no rank {root}")));
        }
        let _w = self.watch.enter(what);
        let proc = self.world.process_at_rank(root as i32);
        let mut len = buf.len() as u64;
        proc.broadcast_into(&mut len);
        buf.resize(len as usize, 0);
        for part in buf.chunks_mut(MAX_COUNT) {
            proc.broadcast_into(part);
        }
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

#[cfg(test)]
mod tests {
    use super::counts_of;

    #[test]
    fn chunks_cover_the_buffer() {
        assert_eq!(counts_of(10, 3), (vec![4, 3, 3], vec![0, 4, 7]));
        assert_eq!(counts_of(1, 2), (vec![1, 0], vec![0, 1]));
        assert_eq!(counts_of(0, 2), (vec![0, 0], vec![0, 0]));
    }
}
