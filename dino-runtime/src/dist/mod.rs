//! Data parallelism: the ranks of a run and the collectives they share (DESIGN §9).
//!
//! ```text
//!   launcher ── mpirun / srun / none ──► Launch { rank, world, local_rank }     (launch.rs)
//!                                             │ open()
//!                                             ▼
//!   Arc<dyn Collective>:  Solo (1 rank) | LocalGroup (ranks as threads) | MpiGroup (feature `mpi`)
//!        │  all_reduce_sum (rank order) · all_gather_bytes · broadcast_bytes · abort
//!        ├─► an executor: the plan's all-reduce steps (gradients, the center's sum), in buckets
//!        └─► the trainer: the initial state, reported scalars, k-NN shards, the run's configuration
//! ```
//!
//! Every implementation sums in a **fixed order**, `((x0 + x1) + x2) + ...` over the ranks, and
//! leaves the same bits on every rank: replicas never drift apart, a run is reproducible bit for
//! bit whatever the transport, and the threads of a [`LocalGroup`] compute exactly what the
//! processes of an MPI run do. (MPI's and NCCL's own all-reduce choose their order by message
//! size and topology; neither promises either property.)
//!
//! A collective that waits too long for the other ranks fails (a [`LocalGroup`]) or ends every
//! rank (MPI) with a message naming the operation and the rank, rather than hanging.
pub mod launch;
mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod op;

pub use launch::{Launch, Launcher};
pub use local::{LocalGroup, LocalRank};
pub use op::{all_reduce, AllReduce};

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// How long a collective waits for the other ranks by default (PyTorch's process groups wait
/// 10 minutes); `DINO_DIST_TIMEOUT` (seconds) changes it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The timeout of collectives: `DINO_DIST_TIMEOUT` seconds, or [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var("DINO_DIST_TIMEOUT") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(s) => match s.trim().parse::<f64>() {
            Ok(t) if t.is_finite() && t > 0.0 && t <= 1e6 => Ok(Duration::from_secs_f64(t)),
            _ => Err(Error::Config {
                what: format!("DINO_DIST_TIMEOUT={s}"),
                why: "must be a number of seconds in (0, 1e6]".into(),
            }),
        },
    }
}

/// The collectives of one rank of a data-parallel run. See the module documentation.
///
/// `what` names the operation in errors and timeouts (`gradients, bucket 2 of 5 (1.2 MB)`).
pub trait Collective: Send + Sync {
    /// This process's rank, `0..world`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world(&self) -> usize;

    /// The transport, in words (`1 rank`, `Open MPI 4.1.4: rank 0 of 2`).
    fn describe(&self) -> String;

    /// Replace `buf` by its sum over the ranks, added in rank order; every rank ends with the
    /// same bits. Every rank passes a buffer of the same length.
    fn all_reduce_sum(&self, what: &str, buf: &mut [f32]) -> Result<()>;

    /// Every rank's bytes, in rank order (lengths may differ).
    fn all_gather_bytes(&self, what: &str, mine: &[u8]) -> Result<Vec<Vec<u8>>>;

    /// Rank `root`'s bytes into `buf` on every rank.
    fn broadcast_bytes(&self, what: &str, buf: &mut Vec<u8>, root: usize) -> Result<()>;

    /// End every rank of the run now, with exit status `code` (after an error on this rank
    /// that the others cannot see: they would wait for it otherwise).
    fn abort(&self, code: i32) -> !;

    /// Does a one-rank group still run the all-reduce path ([`Replicas`])?
    fn reduces_alone(&self) -> bool {
        false
    }
}

/// How a training step is replicated: over how many ranks, and whether it is built with its
/// all-reduces ([`Replicas::reduce`]: always for several ranks; for one rank only when asked,
/// `DINO_DIST_ALWAYS=1`, to measure what the path costs and check it changes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub ranks: usize,
    pub reduce: bool,
}

impl Replicas {
    /// A single process: no all-reduce.
    pub const ONE: Replicas = Replicas { ranks: 1, reduce: false };

    /// `ranks` ranks, all-reducing when there are several.
    pub fn of(ranks: usize) -> Replicas {
        Replicas { ranks, reduce: ranks > 1 }
    }

    /// The replication of `group`'s ranks.
    pub fn of_group(group: &dyn Collective) -> Replicas {
        Replicas { ranks: group.world(), reduce: group.world() > 1 || group.reduces_alone() }
    }
}

/// A handle on this process's group: cheap to clone, [`Solo`] by default, shown as what it
/// is. Derefs to the [`Collective`].
#[derive(Clone)]
pub struct Group(pub Arc<dyn Collective>);

impl Group {
    /// One rank, no launcher.
    pub fn solo() -> Group {
        Group(Arc::new(Solo::default()))
    }

    /// Is this rank 0 (the one that writes files and prints)?
    pub fn is_root(&self) -> bool {
        self.0.rank() == 0
    }
}

impl Default for Group {
    fn default() -> Group {
        Group::solo()
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group({})", self.0.describe())
    }
}

impl std::ops::Deref for Group {
    type Target = dyn Collective;
    fn deref(&self) -> &(dyn Collective + 'static) {
        self.0.as_ref()
    }
}

/// `out = parts[0] + parts[1] + ...`, element by element, in rank order: the one summation
/// order of every [`Collective`].
pub fn sum_in_rank_order(parts: &[&[f32]], out: &mut [f32]) {
    let (first, rest) = parts.split_first().expect("at least one rank");
    out.copy_from_slice(first);
    for p in rest {
        for (o, x) in out.iter_mut().zip(p.iter()) {
            *o += *x;
        }
    }
}

/// f32s as little-endian bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes as f32s (`None` when the length is not a multiple of 4).
pub fn bytes_f32(b: &[u8]) -> Option<Vec<f32>> {
    (b.len() % 4 == 0).then(|| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// The f32s every rank holds, in rank order.
pub fn all_gather_f32(c: &dyn Collective, what: &str, mine: &[f32]) -> Result<Vec<Vec<f32>>> {
    c.all_gather_bytes(what, &f32_bytes(mine))?
        .iter()
        .enumerate()
        .map(|(r, b)| {
            bytes_f32(b).ok_or_else(|| Error::Collective {
                op: what.into(),
                rank: c.rank(),
                world: c.world(),
                why: format!("rank {r} sent {} bytes, not a whole number of f32s", b.len()),
            })
        })
        .collect()
}

/// Rank `root`'s f32s into `buf` on every rank (lengths may differ before).
pub fn broadcast_f32(c: &dyn Collective, what: &str, buf: &mut Vec<f32>, root: usize) -> Result<()> {
    let mut b = if c.rank() == root { f32_bytes(buf) } else { vec![] };
    c.broadcast_bytes(what, &mut b, root)?;
    *buf = bytes_f32(&b).ok_or_else(|| Error::Collective {
        op: what.into(),
        rank: c.rank(),
        world: c.world(),
        why: format!("{} bytes broadcast, not a whole number of f32s", b.len()),
    })?;
    Ok(())
}

/// Replace `buf` by its mean over the ranks (the sum in rank order, divided by the world).
pub fn all_reduce_mean(c: &dyn Collective, what: &str, buf: &mut [f32]) -> Result<()> {
    c.all_reduce_sum(what, buf)?;
    let n = c.world() as f32;
    buf.iter_mut().for_each(|x| *x /= n);
    Ok(())
}

/// Wait until every rank is here.
pub fn barrier(c: &dyn Collective, what: &str) -> Result<()> {
    c.all_gather_bytes(what, &[]).map(drop)
}

/// Is the same value (as bytes) held by every rank? `Err` names the first rank that differs.
pub fn check_same(c: &dyn Collective, what: &str, mine: &[u8]) -> Result<()> {
    let all = c.all_gather_bytes(what, mine)?;
    match all.iter().position(|b| b.as_slice() != all[0].as_slice()) {
        None => Ok(()),
        Some(r) => Err(Error::Collective {
            op: what.into(),
            rank: c.rank(),
            world: c.world(),
            why: format!("rank {r} holds another value than rank 0: every rank must be started with the same command"),
        }),
    }
}

/// The one rank of a run without a launcher: every collective is the identity. With
/// `reduce` the step is still built with its all-reduces (`DINO_DIST_ALWAYS=1`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo {
    pub reduce: bool,
}

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }

    fn world(&self) -> usize {
        1
    }

    fn describe(&self) -> String {
        "1 rank".into()
    }

    fn all_reduce_sum(&self, _: &str, _: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn all_gather_bytes(&self, _: &str, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }

    fn broadcast_bytes(&self, what: &str, _: &mut Vec<u8>, root: usize) -> Result<()> {
        match root {
            0 => Ok(()),
            _ => Err(Error::Collective { op: what.into(), rank: 0, world: 1, why: format!("no rank {root}") }),
        }
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }

    fn reduces_alone(&self) -> bool {
        self.reduce
    }
}

/// The collectives of a launch: [`Solo`] for one rank, MPI for several (a build with the
/// `mpi` feature; refused with the reason otherwise). The launcher's and MPI's views of the
/// run must agree (rank and world size), or the launch is refused naming both.
pub fn open(launch: &Launch) -> Result<Group> {
    if launch.world <= 1 {
        let reduce = std::env::var("DINO_DIST_ALWAYS").is_ok_and(|v| v == "1");
        return Ok(Group(Arc::new(Solo { reduce })));
    }
    #[cfg(feature = "mpi")]
    {
        let g = mpi::MpiGroup::init(timeout_from_env()?)?;
        launch.check_against(g.rank(), g.world())?;
        Ok(Group(Arc::new(g)))
    }
    #[cfg(not(feature = "mpi"))]
    Err(Error::Config {
        what: format!("{} (rank {} of {})", launch.launcher, launch.rank, launch.world),
        why: "this dino was built without MPI, so its ranks cannot talk: build it with `cargo build --release \
              --features mpi` (scripts/get-mpi.sh installs Open MPI), or run one process without a launcher"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_run_in_rank_order() {
        // in f32, (1 + 1e8) - 1e8 = 0 while 1 + (1e8 - 1e8) = 1: the order shows
        let parts: [&[f32]; 3] = [&[1.0], &[1e8], &[-1e8]];
        let mut out = [7f32];
        sum_in_rank_order(&parts, &mut out);
        assert_eq!(out[0], 0.0);
        let bytes = f32_bytes(&[1.5, -2.0]);
        assert_eq!(bytes_f32(&bytes), Some(vec![1.5, -2.0]));
        assert_eq!(bytes_f32(&bytes[..3]), None);
    }

    #[test]
    fn solo_is_the_identity() {
        let s = Solo::default();
        let mut v = vec![1.0, 2.0];
        s.all_reduce_sum("x", &mut v).unwrap();
        all_reduce_mean(&s, "x", &mut v).unwrap();
        assert_eq!(v, [1.0, 2.0]);
        assert_eq!(all_gather_f32(&s, "x", &v).unwrap(), vec![v.clone()]);
        broadcast_f32(&s, "x", &mut v, 0).unwrap();
        assert!(s.broadcast_bytes("x", &mut vec![], 1).unwrap_err().to_string().contains("no rank 1"));
    }
}
