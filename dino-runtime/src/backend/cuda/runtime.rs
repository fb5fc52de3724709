//! The GPU executor of a compiled graph: its device-neutral [`Plan`] (the same schedule and
//! arena offsets every executor runs), with device buffers.
//!
//! Tensors stay on the device between runs: kept outputs (new weights, optimizer state,
//! teacher, center) are left in the graph's store as [`GpuBuffer`]s, so moving them into the
//! old weights' slots (`transfer_data_same_graph`) moves device buffers, and the next run reads
//! them in place. Host inputs (crops, per-step scalars) are uploaded; [`download`] reads any
//! tensor back. The distinct fused kernels of a plan are compiled by NVRTC when the plan is
//! made (once per set of dynamic dims), in parts on parallel threads, or loaded from a compiled
//! artifact's CUBIN ([`CudaRuntime::from_artifact`]); contractions are cuBLAS calls planned by
//! [`BlasPlan`](super::blas::BlasPlan), gathered into one pointer-array call where the calls are
//! independent. Buffers of dropped tensors go back to a pool keyed by length and are reused.
//! [`CudaRuntime::start_profile`] times each kernel and product alone.
use std::collections::HashMap;
use std::fmt;

use cudarc::driver::{CudaSlice, DevicePtr};
use luminal::prelude::*;

use super::device::Gpu;
use super::device_plan::{driver, DevicePlan, DeviceWork, Source};
use super::nccl::{Nccl, Op};
pub use super::plan::distinct_kernels;
use crate::backend::executor::{Executor, ProfileEntry, RunStats};
use crate::backend::plan::{Loc, Plan, Planner};
use crate::error::{Error, Result};

/// A tensor's data on the GPU, as it sits in a luminal graph's tensor store.
#[derive(Clone)]
pub struct GpuBuffer {
    pub data: CudaSlice<f32>,
    /// Logical length (the allocation may be longer: pooled buffers).
    pub len: usize,
}

impl fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuBuffer({} floats)", self.len)
    }
}

impl luminal::prelude::Data for GpuBuffer {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// The value of tensor `node` of `cx`, wherever it lives.
pub fn download(gpu: &Gpu, cx: &Graph, node: NodeIndex) -> Result<Vec<f32>> {
    let t = cx.tensors.get(&(node, 0)).ok_or_else(|| Error::Backend(format!("no value for node {node:?}")))?;
    if let Some(v) = t.data.as_any().downcast_ref::<Vec<f32>>() {
        return Ok(v.clone());
    }
    let b = t.data.as_any().downcast_ref::<GpuBuffer>().ok_or_else(|| Error::Backend("not f32 data".into()))?;
    gpu.download(&b.data, b.len)
}

/// Runs a graph compiled by [`crate::backend::Passes`] on a GPU.
pub struct CudaRuntime {
    gpu: Gpu,
    source: Source,
    plan: Option<DevicePlan>,
    pool: HashMap<usize, Vec<CudaSlice<f32>>>,
    /// When set, each step is timed alone (synchronizing after it): what and how long.
    profile: Option<HashMap<String, (usize, f64)>>,
    /// The communicator of a data-parallel run ([`Executor::set_collective`]).
    nccl: Option<Nccl>,
}

impl CudaRuntime {
    /// Prepare to run `cx` (after compilation) on `gpu`.
    pub fn new(gpu: Gpu, cx: &Graph) -> CudaRuntime {
        CudaRuntime::with_source(gpu, Source::Graph(Planner::new(cx)))
    }

    fn with_source(gpu: Gpu, source: Source) -> CudaRuntime {
        CudaRuntime { gpu, source, plan: None, pool: HashMap::new(), profile: None, nccl: None }
    }

    /// Run an artifact's plan (validated by [`Plan::from_bytes`]) with the kernels of its
    /// `.code` section ([`super::artifact`]): no graph, no NVRTC. The section is checked
    /// against the plan and this GPU's architecture first; the CUBIN is loaded when the GPU can
    /// run it, else the driver compiles the PTX. Only graphs at the plan's dims run.
    pub fn from_artifact(gpu: Gpu, plan: Plan, code: &[u8]) -> Result<CudaRuntime> {
        let source = Source::artifact(&gpu, plan, code)?;
        Ok(CudaRuntime::with_source(gpu, source))
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Every tensor of `cx` held on the GPU back to the host (checkpoints, evaluation); the
    /// next run uploads them again.
    pub fn all_to_host(&self, cx: &mut Graph) -> Result<()> {
        let on_gpu: Vec<NodeIndex> = cx
            .tensors
            .iter()
            .filter(|((_, out), t)| *out == 0 && t.data.as_any().is::<GpuBuffer>())
            .map(|((n, _), _)| *n)
            .collect();
        self.to_host(cx, &on_gpu)
    }

    /// Kernels and cuBLAS calls one run launches (input copies and unpermutes included),
    /// once planned.
    pub fn launches(&self) -> Option<usize> {
        self.plan.as_ref().map(DevicePlan::launches)
    }

    /// Time every step of the following runs alone (a synchronization after each: slower
    /// runs, exact attribution), until [`CudaRuntime::take_profile`].
    pub fn start_profile(&mut self) {
        self.profile = Some(HashMap::new());
    }

    /// The profile since [`CudaRuntime::start_profile`], longest first; stops profiling.
    pub fn take_profile(&mut self) -> Vec<ProfileEntry> {
        let mut v: Vec<ProfileEntry> = self
            .profile
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|(what, (calls, seconds))| ProfileEntry { what, calls, seconds })
            .collect();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        v
    }

    /// Bring these tensors of `cx` back to the host (as `Vec<f32>`, what CPU code reads).
    pub fn to_host(&self, cx: &mut Graph, nodes: &[NodeIndex]) -> Result<()> {
        for &n in nodes {
            let v = download(&self.gpu, cx, n)?;
            cx.tensors.insert((n, 0), Tensor::new(v));
        }
        Ok(())
    }

    fn alloc(&mut self, len: usize) -> Result<CudaSlice<f32>> {
        if let Some(b) = self.pool.get_mut(&len).and_then(Vec::pop) {
            return Ok(b);
        }
        self.gpu.stream.alloc_zeros::<f32>(len.max(1)).map_err(driver)
    }

    /// Run the graph once: inputs from `cx` (host vectors are uploaded, [`GpuBuffer`]s used in
    /// place), kept outputs left in `cx` as [`GpuBuffer`]s.
    pub fn execute(&mut self, cx: &mut Graph) -> Result<()> {
        Executor::plan(self, cx)?;
        let dp = self.plan.take().expect("planned");
        let r = self.run(cx, &dp);
        self.plan = Some(dp);
        r
    }

    fn run(&mut self, cx: &mut Graph, dp: &DevicePlan) -> Result<()> {
        let plan = &dp.plan;
        let stream = self.gpu.stream.clone();
        // inputs: device buffers as they are, host vectors uploaded
        plan.check_inputs(cx, "f32 host data or a GPU buffer", |a| {
            a.downcast_ref::<GpuBuffer>().map(|b| b.len).or_else(|| a.downcast_ref::<Vec<f32>>().map(Vec::len))
        })?;
        let mut inputs: Vec<(NodeIndex, GpuBuffer)> = Vec::with_capacity(plan.n_inputs);
        let mut failure = None;
        for (s, _) in plan.inputs() {
            let t = cx.tensors.remove(&(s.node, 0)).expect("checked above");
            // move the data out of the store entry (upcast to `Any` to take it by value)
            let any: Box<dyn std::any::Any> = t.data;
            let b = match any.downcast::<GpuBuffer>() {
                Ok(b) => *b,
                Err(any) => {
                    let v = any.downcast::<Vec<f32>>().expect("checked above");
                    match self.gpu.upload(&v) {
                        Ok(data) => GpuBuffer { data, len: v.len() },
                        Err(e) => {
                            cx.tensors.insert((s.node, 0), Tensor::new(*v));
                            failure = Some(e);
                            break;
                        }
                    }
                }
            };
            inputs.push((s.node, b));
        }
        if let Some(e) = failure {
            // a failed upload loses no data: what was taken goes back (on the device)
            for (node, b) in inputs {
                cx.tensors.insert((node, 0), Tensor::new(b));
            }
            return Err(e);
        }
        let (arena_ptr, _sync) = dp.arena.device_ptr(&stream);
        let mut kept: Vec<Option<GpuBuffer>> = (0..plan.n_kept).map(|_| None).collect();
        let mut ptrs: Vec<u64> = vec![0; plan.steps.len()];
        let mut input_i = 0;
        // buckets: started on NCCL's stream when ready, waited for before their first reader
        let (mut next_start, mut next_wait) = (0, 0);
        let mut in_flight: Vec<cudarc::driver::CudaEvent> = vec![];
        for (i, s) in plan.steps.iter().enumerate() {
            while plan.buckets.get(next_wait).is_some_and(|b| b.flush_before == i) {
                stream.wait(&in_flight[next_wait]).map_err(driver)?;
                next_wait += 1;
            }
            if matches!(dp.work[i], DeviceWork::Input) {
                let (p, _) = inputs[input_i].1.data.device_ptr(&stream);
                ptrs[i] = p;
                input_i += 1;
                continue;
            }
            let out = match s.loc {
                Loc::Arena(off) => arena_ptr + off as u64,
                Loc::Kept(k) => {
                    let b = self.alloc(s.out_len)?;
                    let (p, _) = b.device_ptr(&stream);
                    kept[k] = Some(GpuBuffer { data: b, len: s.out_len });
                    p
                }
                Loc::Input(_) => unreachable!("only inputs live in input slots"),
            };
            ptrs[i] = out;
            let src: Vec<u64> = s.srcs.iter().map(|si| ptrs[*si]).collect();
            let t0 = self.profile.is_some().then(std::time::Instant::now);
            match &dp.work[i] {
                // SAFETY (all three): pointers into live buffers (inputs, arena, kept outputs,
                // scratch) sized by the plan from the same views the kernels and calls read.
                DeviceWork::Fused { f, launch, .. } => unsafe { self.gpu.launch(f, *launch, &src, out)? },
                DeviceWork::Gemm { bp, copies, unpermute, gathered } => {
                    // inputs cuBLAS cannot read in place go through canonical copies
                    let mut src = src;
                    for (o, f, launch, scratch) in copies {
                        let dst = scratch.device_ptr(&stream).0;
                        unsafe { self.gpu.launch(f, *launch, &[src[*o]], dst)? };
                        src[*o] = dst;
                    }
                    // a permuted product writes a scratch that a kernel puts back in order
                    let target = unpermute.as_ref().map_or(out, |(_, _, scratch)| scratch.device_ptr(&stream).0);
                    unsafe { self.gpu.blas_calls(bp, gathered.as_ref(), src[0], src[1], target, s.out_len)? };
                    if let Some((f, launch, _)) = unpermute {
                        unsafe { self.gpu.launch(f, *launch, &[target], out)? };
                    }
                }
                // a constant: its bits written by a memset (no host memory involved)
                DeviceWork::Value(v) => unsafe {
                    cudarc::driver::sys::cuMemsetD32Async(out, v.to_bits(), 1, stream.cu_stream())
                        .result()
                        .map_err(driver)?;
                },
                // this rank's part into the step's buffer (a dense source: the planner checks)
                DeviceWork::AllReduce(_) => unsafe {
                    cudarc::driver::sys::cuMemcpyDtoDAsync_v2(out, src[0], s.out_len * 4, stream.cu_stream())
                        .result()
                        .map_err(driver)?;
                },
                DeviceWork::Input => unreachable!(),
            }
            // a bucket whose last member is done starts reducing while the main stream goes on
            if let Some(b) = plan.buckets.get(next_start).filter(|b| b.ready == i) {
                let nccl = self.nccl.as_ref().expect("checked when planned");
                nccl.stream.wait(&stream.record_event(None).map_err(driver)?).map_err(driver)?;
                let bufs: Vec<(u64, usize, Op)> = b
                    .members
                    .iter()
                    .map(|&m| match dp.work[m] {
                        DeviceWork::AllReduce(op) => (ptrs[m], plan.steps[m].out_len, op),
                        _ => unreachable!("a bucket holds all-reduce steps"),
                    })
                    .collect();
                // SAFETY: the members are live buffers of this run (arena or kept), complete on the
                // main stream (waited above), and nothing reads or writes them before the main
                // stream waits for this bucket's event at its first reader.
                unsafe { nccl.all_reduce(&bufs)? };
                in_flight.push(nccl.stream.record_event(None).map_err(driver)?);
                next_start += 1;
            }
            if let Some(t0) = t0 {
                stream.synchronize().map_err(driver)?;
                let what = dp.work[i].describe();
                let e = self.profile.as_mut().expect("profiling").entry(what).or_default();
                e.0 += 1;
                e.1 += t0.elapsed().as_secs_f64();
            }
        }
        for e in &in_flight[next_wait..] {
            stream.wait(e).map_err(driver)?;
        }
        stream.synchronize().map_err(driver)?;
        // kept inputs go back, the others to the pool; kept outputs into the store
        let kept = kept.into_iter().map(|b| b.expect("every kept output computed")).collect();
        let pool = &mut self.pool;
        let inputs = inputs.into_iter().map(|(_, b)| b).collect();
        plan.hand_back(cx, inputs, kept, |b: GpuBuffer| pool.entry(b.data.len()).or_default().push(b.data));
        Ok(())
    }
}

impl Executor for CudaRuntime {
    fn describe(&self) -> String {
        self.gpu.describe()
    }

    fn plan(&mut self, cx: &Graph) -> Result<()> {
        if !self.plan.as_ref().is_some_and(|p| p.plan.is_for(cx)) {
            if let Some(dp) = self.plan.take() {
                self.source.retire(dp);
            }
            let p = self.source.make(&self.gpu, self.nccl.as_ref(), cx)?;
            self.plan = Some(p);
        }
        Ok(())
    }

    fn execute(&mut self, cx: &mut Graph) -> Result<()> {
        CudaRuntime::execute(self, cx)
    }

    fn to_host(&mut self, cx: &mut Graph, nodes: &[NodeIndex]) -> Result<()> {
        CudaRuntime::to_host(self, cx, nodes)
    }

    fn all_to_host(&mut self, cx: &mut Graph) -> Result<()> {
        CudaRuntime::all_to_host(self, cx)
    }

    /// One rank: nothing to do (unless it runs the all-reduce path alone, `DINO_DIST_ALWAYS`);
    /// several: NCCL, its id broadcast over `group`.
    fn set_collective(&mut self, group: std::sync::Arc<dyn crate::dist::Collective>) -> Result<()> {
        if group.world() > 1 || group.reduces_alone() {
            self.nccl = Some(Nccl::init(&self.gpu, &*group)?);
            // planned again with the communicator
            if let Some(dp) = self.plan.take() {
                self.source.retire(dp);
            }
        }
        Ok(())
    }

    fn stats(&self) -> RunStats {
        match &self.plan {
            Some(dp) => RunStats {
                arena_bytes: dp.plan.arena_bytes,
                kernels: dp.plan.kernels(),
                launches: self.launches(),
                order: dp.plan.order_name,
            },
            None => RunStats::default(),
        }
    }

    fn start_profile(&mut self) {
        CudaRuntime::start_profile(self)
    }

    fn take_profile(&mut self) -> Vec<ProfileEntry> {
        CudaRuntime::take_profile(self)
    }
}
