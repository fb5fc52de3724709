//! The GPU executor of a compiled graph: the CPU executor's plan (same passes, same schedule,
//! same arena offsets), run with device buffers.
//!
//! Tensors stay on the device between runs: kept outputs (new weights, optimizer state,
//! teacher, center) are left in the graph's store as [`GpuBuffer`]s, so moving them into the
//! old weights' slots (`transfer_data_same_graph`) moves device buffers, and the next run reads
//! them in place. Host inputs (crops, per-step scalars) are uploaded; [`download`] reads any
//! tensor back. All fused kernels of a plan are compiled in one NVRTC module when the plan is
//! made (once per set of dynamic dims); contractions are cuBLAS calls planned by
//! [`BlasPlan`]. Buffers of dropped tensors go back to a pool keyed by length and are reused.
use std::collections::HashMap;
use std::fmt;

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use luminal::prelude::*;

use super::blas::{BlasPlan, Operand, Trans};
use super::codegen::{kernel_source, KernelSource, Launch};
use super::device::{compile_ptx, Gpu};
use crate::backend::cpu::runtime::{Loc, Plan, Work};
use crate::backend::cpu::CpuRuntime;
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

fn driver(e: impl fmt::Debug) -> Error {
    Error::Backend(format!("CUDA: {e:?}"))
}

enum DeviceWork {
    Input,
    Fused { f: CudaFunction, launch: Launch },
    Gemm(BlasPlan),
    Value(f32),
}

struct DevicePlan {
    plan: Plan,
    work: Vec<DeviceWork>,
    arena: CudaSlice<f32>,
}

struct PlanKernels {
    plan: Plan,
    /// Distinct fused kernels, named `k0`, `k1`, ...
    sources: Vec<KernelSource>,
    /// Fused step index -> its kernel in `sources`.
    kernel_of: HashMap<usize, usize>,
    gemms: HashMap<usize, BlasPlan>,
}

fn plan_kernels(planner: &CpuRuntime, cx: &Graph) -> Result<PlanKernels> {
    let plan = planner.best_plan(cx)?;
    // one function per distinct kernel: the 12 blocks of a ViT share theirs
    let mut sources: Vec<KernelSource> = vec![];
    let mut by_code: HashMap<String, usize> = HashMap::new();
    let mut kernel_of: HashMap<usize, usize> = HashMap::new();
    let mut gemms = HashMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        match &s.work {
            Work::Fused(k) => {
                let src = kernel_source(k, "dino_k");
                let next = sources.len();
                let j = *by_code.entry(src.code.clone()).or_insert(next);
                if j == next {
                    let name = format!("k{j}");
                    let code = src.code.replace("DINO_KERNEL dino_k(", &format!("DINO_KERNEL {name}("));
                    sources.push(KernelSource { name, code, ..src });
                }
                kernel_of.insert(i, j);
            }
            Work::Gemm(g) => {
                let bp = BlasPlan::new(g).map_err(|e| {
                    Error::Backend(format!(
                        "CUDA backend: a contraction cuBLAS cannot read in place ({e:?}); the copy \
                             fallback is not implemented yet"
                    ))
                })?;
                gemms.insert(i, bp);
            }
            Work::Other => {
                return Err(Error::Backend(format!(
                    "CUDA backend: no GPU kernel for {:?}",
                    cx.graph.node_weight(s.node).map(|o| format!("{o:?}"))
                )))
            }
            _ => {}
        }
    }
    Ok(PlanKernels { plan, sources, kernel_of, gemms })
}

/// The distinct CUDA kernels the runtime would compile for `cx` (compiled, not yet planned
/// for the GPU) at its current dynamic dims, and how many fused steps use them; needs no GPU
/// (NVRTC alone compiles them: `device::compile_ptx`).
pub fn distinct_kernels(cx: &Graph) -> Result<(Vec<KernelSource>, usize)> {
    let pk = plan_kernels(&CpuRuntime::new(cx), cx)?;
    Ok((pk.sources, pk.kernel_of.len()))
}

/// Runs a graph compiled by `CpuCompiler` on a GPU.
pub struct CudaRuntime {
    gpu: Gpu,
    planner: CpuRuntime,
    plan: Option<DevicePlan>,
    pool: HashMap<usize, Vec<CudaSlice<f32>>>,
}

impl CudaRuntime {
    /// Prepare to run `cx` (after compilation) on `gpu`.
    pub fn new(gpu: Gpu, cx: &Graph) -> CudaRuntime {
        CudaRuntime { gpu, planner: CpuRuntime::new(cx), plan: None, pool: HashMap::new() }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Bring these tensors of `cx` back to the host (as `Vec<f32>`, what CPU code reads).
    pub fn to_host(&self, cx: &mut Graph, nodes: &[NodeIndex]) -> Result<()> {
        for &n in nodes {
            let v = download(&self.gpu, cx, n)?;
            cx.tensors.insert((n, 0), Tensor::new(v));
        }
        Ok(())
    }

    fn make_plan(&mut self, cx: &Graph) -> Result<DevicePlan> {
        let PlanKernels { plan, sources, kernel_of, mut gemms } = plan_kernels(&self.planner, cx)?;
        let mut functions = vec![];
        if !sources.is_empty() {
            let t0 = std::time::Instant::now();
            let ptx = compile_ptx(&sources, self.gpu.arch())?;
            let module = self.gpu.ctx.load_module(ptx).map_err(driver)?;
            for s in &sources {
                functions.push((module.load_function(&s.name).map_err(driver)?, s.launch));
            }
            if crate::debug::level() >= 1 {
                eprintln!(
                    "[dino] cuda: {} fused steps, {} distinct kernels compiled in {:.2} s",
                    kernel_of.len(),
                    sources.len(),
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        let work = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| match &s.work {
                Work::Input { .. } => DeviceWork::Input,
                Work::Fused(_) => {
                    let (f, launch) = functions[kernel_of[&i]].clone();
                    DeviceWork::Fused { f, launch }
                }
                Work::Gemm(_) => DeviceWork::Gemm(gemms.remove(&i).expect("planned")),
                Work::Value(v) => DeviceWork::Value(*v),
                Work::Other => unreachable!("rejected above"),
            })
            .collect();
        let arena = self.gpu.stream.alloc_zeros::<f32>(plan.arena_len.max(1)).map_err(driver)?;
        Ok(DevicePlan { plan, work, arena })
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
        let mut dyn_dims: Vec<(char, usize)> = cx.dyn_map.iter().map(|(k, v)| (*k, *v)).collect();
        dyn_dims.sort();
        if self.plan.as_ref().map(|p| p.plan.dyn_dims != dyn_dims).unwrap_or(true) {
            self.plan = None;
            let p = self.make_plan(cx)?;
            self.plan = Some(p);
        }
        let dp = self.plan.take().expect("planned");
        let r = self.run(cx, &dp);
        self.plan = Some(dp);
        r
    }

    fn run(&mut self, cx: &mut Graph, dp: &DevicePlan) -> Result<()> {
        let plan = &dp.plan;
        let stream = self.gpu.stream.clone();
        // inputs: device buffers as they are, host vectors uploaded
        let mut inputs: Vec<(NodeIndex, GpuBuffer)> = Vec::with_capacity(plan.n_inputs);
        for s in &plan.steps {
            if let Work::Input { name } = &s.work {
                let t = cx.tensors.remove(&(s.node, 0));
                let need = plan.input_extent[inputs.len()];
                let b = match t {
                    None => None,
                    Some(t) => {
                        // move the data out of the store entry (upcast to `Any` to take it by value)
                        let any: Box<dyn std::any::Any> = t.data;
                        match any.downcast::<GpuBuffer>() {
                            Ok(b) => Some(*b),
                            Err(any) => match any.downcast::<Vec<f32>>() {
                                Ok(v) => Some(GpuBuffer { data: self.gpu.upload(&v)?, len: v.len() }),
                                Err(_) => None,
                            },
                        }
                    }
                };
                match b {
                    Some(b) if b.len >= need => inputs.push((s.node, b)),
                    Some(b) => {
                        return Err(Error::WrongSize {
                            name: name.clone(),
                            shape: "the graph's views of it".into(),
                            expected: need,
                            got: b.len,
                        })
                    }
                    None => return Err(Error::MissingInput { name: name.clone() }),
                }
            }
        }
        let (arena_ptr, _sync) = dp.arena.device_ptr(&stream);
        let mut kept: Vec<Option<GpuBuffer>> = (0..plan.n_kept).map(|_| None).collect();
        let mut ptrs: Vec<u64> = vec![0; plan.steps.len()];
        let mut input_i = 0;
        for (i, s) in plan.steps.iter().enumerate() {
            if matches!(dp.work[i], DeviceWork::Input) {
                let (p, _) = inputs[input_i].1.data.device_ptr(&stream);
                ptrs[i] = p;
                input_i += 1;
                continue;
            }
            let out = match s.loc {
                Loc::Arena(off) => arena_ptr + (off * 4) as u64,
                Loc::Kept(k) => {
                    let b = self.alloc(s.out_len)?;
                    let (p, _) = b.device_ptr(&stream);
                    kept[k] = Some(GpuBuffer { data: b, len: s.out_len });
                    p
                }
                Loc::Input(_) => unreachable!("only inputs live in input slots"),
            };
            ptrs[i] = out;
            let src: Vec<u64> = s.srcs.iter().map(|(si, _)| ptrs[*si]).collect();
            match &dp.work[i] {
                DeviceWork::Fused { f, launch } => {
                    let (grid, block) = launch.grid_block(self.gpu.sms);
                    let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
                    let mut b = stream.launch_builder(f);
                    for p in &src {
                        b.arg(p);
                    }
                    b.arg(&out);
                    // SAFETY: pointers into live buffers sized by the plan from the same views.
                    unsafe { b.launch(cfg) }.map_err(driver)?;
                }
                DeviceWork::Gemm(bp) => {
                    // SAFETY: as above; offsets, strides and leading dimensions come from the views.
                    unsafe {
                        if bp.zero_fill {
                            cudarc::driver::result::memset_d8_async(out, 0, s.out_len * 4, stream.cu_stream())
                                .map_err(driver)?;
                        }
                        for c in &bp.calls {
                            let pick = |o: Operand| if o == Operand::A { src[0] } else { src[1] };
                            let op = |t: Trans| {
                                if t == Trans::N {
                                    cublasOperation_t::CUBLAS_OP_N
                                } else {
                                    cublasOperation_t::CUBLAS_OP_T
                                }
                            };
                            let (alpha, beta) = (1.0f32, c.beta);
                            cudarc::cublas::result::sgemm_strided_batched(
                                *self.gpu.blas().handle(),
                                op(c.trans_x),
                                op(c.trans_y),
                                c.rows,
                                c.cols,
                                c.k,
                                &alpha,
                                (pick(c.x) + (c.off_x * 4) as u64) as *const f32,
                                c.ld_x,
                                c.stride_x,
                                (pick(c.y) + (c.off_y * 4) as u64) as *const f32,
                                c.ld_y,
                                c.stride_y,
                                &beta,
                                (out + (c.off_c * 4) as u64) as *mut f32,
                                c.ld_c,
                                c.stride_c,
                                c.batch,
                            )
                            .map_err(driver)?;
                        }
                    }
                }
                DeviceWork::Value(v) => unsafe {
                    cudarc::driver::result::memcpy_htod_async(out, std::slice::from_ref(v), stream.cu_stream())
                        .map_err(driver)?;
                },
                DeviceWork::Input => unreachable!(),
            }
        }
        stream.synchronize().map_err(driver)?;
        // kept inputs go back, the others to the pool; kept outputs into the store
        for (node, b) in inputs {
            if cx.no_delete.contains(&node) {
                cx.tensors.insert((node, 0), Tensor::new(b));
            } else {
                self.pool.entry(b.data.len()).or_default().push(b.data);
            }
        }
        for (s, b) in plan.steps.iter().filter(|s| matches!(s.loc, Loc::Kept(_))).zip(kept) {
            let b = b.expect("every kept output computed");
            cx.tensors.insert((s.node, 0), Tensor::new(b));
        }
        Ok(())
    }
}
