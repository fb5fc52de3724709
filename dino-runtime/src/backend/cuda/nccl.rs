//! NCCL for the all-reduce steps of a data-parallel plan on GPUs, loaded at run time like the
//! rest of CUDA (`libnccl.so.2`: the toolkit's, or pip's `nvidia-nccl-cu13`).
//!
//! ```text
//!   rank 0: ncclGetUniqueId ──host collective (MPI) broadcast──► every rank: ncclCommInitRank
//!   a step:  main stream  ─ backward ─ … ─ last member of bucket b ─┐ (event)    … ─ first reader ─
//!            NCCL stream                                            └─ ncclGroup{AllReduce × members} ─┘ (event)
//! ```
//!
//! A bucket (`plan/collective.rs`) is reduced on a stream of its own from the moment its last
//! member is computed, while the backward pass goes on, and the main stream waits for it only
//! before the first step that reads a member: DDP's overlap, planned. Sums, or means
//! (`ncclAvg`) for the gradients. NCCL picks its own summation order (rings and trees by
//! size and topology), so unlike the CPU's collectives a GPU run repeats itself only as far as
//! NCCL does.
use std::sync::Arc;

use cudarc::driver::CudaStream;
use cudarc::nccl::{result as nccl, sys};

use super::device::Gpu;
use crate::dist::Collective;
use crate::error::{Error, Result};

/// A rank's NCCL communicator and the stream its reductions run on.
pub struct Nccl {
    comm: sys::ncclComm_t,
    pub rank: usize,
    pub world: usize,
    pub stream: Arc<CudaStream>,
}

fn nccl_err(what: &str) -> impl Fn(nccl::NcclError) -> Error + '_ {
    move |e| Error::Backend(format!("NCCL: {what}: {e:?}"))
}

/// What to do with a member's sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Sum,
    /// The sum divided by the number of ranks.
    Mean,
}

impl Op {
    /// The op of an all-reduce step that scales its sum by `scale` over `world` ranks: NCCL has
    /// no other scaling, and the planner makes no other.
    pub fn of(scale: f32, world: usize, name: &str) -> Result<Op> {
        if scale == 1.0 {
            Ok(Op::Sum)
        } else if scale == 1.0 / world as f32 {
            Ok(Op::Mean)
        } else {
            Err(Error::Backend(format!(
                "NCCL: the all-reduce of `{name}` scales its sum by {scale}: only 1 (a sum) or 1/{world} (a mean) run on NCCL"
            )))
        }
    }
}

impl Nccl {
    /// Join the ranks of `group` on `gpu`: rank 0 makes NCCL's unique id, the host group
    /// broadcasts it, and every rank initializes its communicator.
    pub fn init(gpu: &Gpu, group: &dyn Collective) -> Result<Nccl> {
        // SAFETY: only tries to dlopen the candidate names.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::Backend(
                "NCCL: cannot load libnccl (toolkit, or pip package nvidia-nccl-cu13); add its directory to \
                 LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        let (rank, world) = (group.rank(), group.world());
        let mut id = vec![];
        if rank == 0 {
            let u = nccl::get_uniqueid().map_err(nccl_err("ncclGetUniqueId"))?;
            id = u.internal.iter().map(|c| *c as u8).collect();
        }
        group.broadcast_bytes("NCCL's unique id", &mut id, 0)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        if id.len() != internal.len() {
            return Err(Error::Backend(format!("NCCL: rank 0 sent a unique id of {} bytes, not 128", id.len())));
        }
        for (d, s) in internal.iter_mut().zip(&id) {
            *d = *s as std::ffi::c_char;
        }
        gpu.ctx.bind_to_thread().map_err(|e| Error::Backend(format!("CUDA: {e:?}")))?;
        let mut comm = std::mem::MaybeUninit::uninit();
        // SAFETY: `comm` is written by NCCL before it is read; every rank passes the same id
        // and its own rank of the same world.
        let comm = unsafe {
            nccl::comm_init_rank(comm.as_mut_ptr(), world as i32, sys::ncclUniqueId { internal }, rank as i32)
                .map_err(nccl_err("ncclCommInitRank"))?;
            comm.assume_init()
        };
        let stream = gpu.stream.fork().map_err(|e| Error::Backend(format!("CUDA: a stream for NCCL: {e:?}")))?;
        Ok(Nccl { comm, rank, world, stream })
    }

    /// Reduce each `(device pointer, f32 count, op)` in place on [`Self::stream`], as one NCCL
    /// group (one launch for the bucket).
    ///
    /// # Safety
    /// Every pointer addresses `count` live f32s on this rank's GPU, not written by anything
    /// else until the reduction is waited for.
    pub unsafe fn all_reduce(&self, bufs: &[(u64, usize, Op)]) -> Result<()> {
        nccl::group_start().map_err(nccl_err("ncclGroupStart"))?;
        let mut failed = None;
        for &(p, n, op) in bufs {
            let op = match op {
                Op::Sum => sys::ncclRedOp_t::ncclSum,
                Op::Mean => sys::ncclRedOp_t::ncclAvg,
            };
            let stream = self.stream.cu_stream() as sys::cudaStream_t;
            let buf = p as *mut std::ffi::c_void;
            if let Err(e) = nccl::all_reduce(buf, buf, n, sys::ncclDataType_t::ncclFloat32, op, self.comm, stream) {
                failed = Some(e);
                break;
            }
        }
        nccl::group_end().map_err(nccl_err("ncclGroupEnd"))?;
        match failed {
            Some(e) => Err(nccl_err("ncclAllReduce")(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // SAFETY: the communicator was made by `init` and is destroyed once.
        let _ = unsafe { nccl::comm_destroy(self.comm) };
    }
}

#[cfg(test)]
mod tests {
    use super::Op;

    #[test]
    fn sums_and_means_map_to_nccl_ops_and_nothing_else() {
        assert_eq!(Op::of(1.0, 4, "center").unwrap(), Op::Sum);
        assert_eq!(Op::of(0.25, 4, "blocks.0.mlp.fc1.weight").unwrap(), Op::Mean);
        let e = Op::of(0.3, 4, "x").unwrap_err().to_string();
        assert!(e.contains("`x` scales its sum by 0.3") && e.contains("1/4"), "{e}");
    }
}
