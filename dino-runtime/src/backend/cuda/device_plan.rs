//! A plan made ready for one GPU: each step's function, cuBLAS calls and scratch buffers,
//! from a graph (kernels compiled by NVRTC) or from an artifact (kernels loaded from its CUBIN
//! or PTX).
//!
//! ```text
//!  Source::Graph(planner) ──plan, gemm_recipes, plan_kernels, NVRTC──┐
//!                                                                    ├─► DevicePlan { plan, work, arena }
//!  Source::Artifact { plan, code, functions } ──lend the plan────────┘        │ retire: an artifact's
//!          ▲                                                                  │ plan is lent back
//!          └──────────────────────────────────────────────────────────────────┘
//! ```
use std::fmt;

use cudarc::driver::{CudaFunction, CudaSlice};
use luminal::prelude::*;

use super::artifact::{image_for, Arch, CudaCode};
use super::blas::BlasPlan;
use super::codegen::{KernelSource, Launch};
use super::device::{compile_ptx, Gathered, Gpu};
use super::nccl::{Nccl, Op};
use super::plan::{gemm_recipes, plan_kernels, PlanKernels};
use crate::backend::plan::{Plan, Planner, Work};
use crate::error::{Error, Result};

pub(super) fn driver(e: impl fmt::Debug) -> Error {
    Error::Backend(format!("CUDA: {e:?}"))
}

/// A loaded kernel: its function, launch shape and name in its module (`k12`).
pub(super) type Function = (CudaFunction, Launch, String);

pub(super) enum DeviceWork {
    Input,
    Fused {
        f: CudaFunction,
        launch: Launch,
        /// The kernel's name in the module (`k12`), for profiles.
        name: String,
    },
    Gemm {
        bp: BlasPlan,
        /// Operand, copy kernel, its launch, the scratch buffer it writes.
        copies: Vec<(usize, CudaFunction, Launch, CudaSlice<f32>)>,
        /// The calls write this scratch; the kernel copies it into the output.
        unpermute: Option<(CudaFunction, Launch, CudaSlice<f32>)>,
        /// The calls as one pointer-array call, when they gather.
        gathered: Option<Gathered>,
    },
    Value(f32),
    /// This rank's part copied into the step's buffer; its bucket reduces it with NCCL.
    AllReduce(Op),
}

pub(super) struct DevicePlan {
    pub(super) plan: Plan,
    pub(super) work: Vec<DeviceWork>,
    pub(super) arena: CudaSlice<f32>,
}

/// Where a runtime's plans come from.
pub(super) enum Source {
    /// Planned for the graph at each new set of dynamic dims, kernels compiled by NVRTC.
    Graph(Planner),
    /// An artifact's one plan (lent to the device plan while it runs), its kernels loaded
    /// from the file once (in the order of their names, `k0`, `k1`, ...).
    Artifact { plan: Option<Plan>, code: CudaCode, functions: Vec<Function> },
}

impl Source {
    /// An artifact's plan and `.code` section, checked against each other and against `gpu`'s
    /// architecture, its kernels loaded (CUBIN, or PTX the driver compiles on a newer GPU).
    pub(super) fn artifact(gpu: &Gpu, plan: Plan, code: &[u8]) -> Result<Source> {
        let bad = |why: String| Error::Backend(format!("the CUDA code of the compiled program: {why}"));
        let code = CudaCode::read(code).map_err(bad)?;
        let device: Arch = gpu.arch().parse().map_err(bad)?;
        let image = image_for(code.arch().map_err(bad)?, device).map_err(bad)?;
        let pk = code.kernels(&plan).map_err(bad)?;
        let t0 = std::time::Instant::now();
        let mut functions: Vec<Function> = Vec::with_capacity(pk.sources.len());
        let images = code.images(image);
        let n = images.len();
        for (m, (names, img)) in images.into_iter().enumerate() {
            let module = gpu.ctx.load_module(img).map_err(driver)?;
            for name in names {
                let f = module.load_function(name).map_err(driver)?;
                if m + 1 == n {
                    gpu.set_fill_ptrs(f); // the helper module
                } else {
                    functions.push((f, pk.sources[functions.len()].launch, name.clone()));
                }
            }
        }
        if crate::debug::level() >= 1 {
            eprintln!(
                "[dino] cuda: {} kernels loaded ({image:?}) in {:.3} s",
                functions.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        Ok(Source::Artifact { plan: Some(plan), code, functions })
    }

    /// A device plan no longer run: an artifact's plan goes back to be lent again.
    pub(super) fn retire(&mut self, dp: DevicePlan) {
        self.give_back(dp.plan);
    }

    fn give_back(&mut self, p: Plan) {
        if let Source::Artifact { plan: slot @ None, .. } = self {
            *slot = Some(p);
        }
    }

    /// The device plan for the current dynamic dims of `cx`.
    pub(super) fn make(&mut self, gpu: &Gpu, nccl: Option<&Nccl>, cx: &Graph) -> Result<DevicePlan> {
        let (plan, pk, functions) = match self {
            Source::Graph(planner) => {
                let plan = planner.plan(cx)?;
                let pk = plan_kernels(&plan, &gemm_recipes(&plan, cx)?)?;
                let functions = jit(gpu, &pk.sources, pk.kernel_of.len())?;
                (plan, pk, functions)
            }
            Source::Artifact { plan: slot, code, functions } => {
                let plan = slot.take().ok_or_else(|| Error::Backend("the artifact's plan is in use".into()))?;
                // checked when loaded; made again for the steps' kernel indices
                let pk = if plan.is_for(cx) {
                    code.kernels(&plan).map_err(Error::Backend)
                } else {
                    Err(plan.other_dims(cx))
                };
                match pk {
                    Ok(pk) => (plan, pk, functions.clone()),
                    Err(e) => {
                        *slot = Some(plan);
                        return Err(e);
                    }
                }
            }
        };
        match device_work(gpu, nccl, &plan, pk, &functions) {
            Ok((work, arena)) => Ok(DevicePlan { plan, work, arena }),
            Err(e) => {
                self.give_back(plan);
                Err(e)
            }
        }
    }
}

/// The distinct kernels of a plan compiled by NVRTC, in parts on parallel threads.
fn jit(gpu: &Gpu, sources: &[KernelSource], fused_steps: usize) -> Result<Vec<Function>> {
    let mut functions: Vec<Function> = vec![];
    if !sources.is_empty() {
        let t0 = std::time::Instant::now();
        // NVRTC compiles one module per call on one thread: compile parts in parallel
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
        let part = sources.len().div_ceil(threads).max(16);
        let arch = gpu.arch();
        let ptxs: Vec<Result<cudarc::nvrtc::Ptx>> = std::thread::scope(|sc| {
            let jobs: Vec<_> = sources.chunks(part).map(|c| sc.spawn(move || compile_ptx(c, arch))).collect();
            jobs.into_iter().map(|j| j.join().expect("NVRTC thread")).collect()
        });
        for (chunk, ptx) in sources.chunks(part).zip(ptxs) {
            let module = gpu.ctx.load_module(ptx?).map_err(driver)?;
            for s in chunk {
                functions.push((module.load_function(&s.name).map_err(driver)?, s.launch, s.name.clone()));
            }
        }
        if crate::debug::level() >= 1 {
            eprintln!(
                "[dino] cuda: {fused_steps} fused steps, {} distinct kernels compiled in {:.2} s",
                sources.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(functions)
}

/// Each step's work on the GPU, and the arena.
fn device_work(
    gpu: &Gpu,
    nccl: Option<&Nccl>,
    plan: &Plan,
    pk: PlanKernels,
    functions: &[Function],
) -> Result<(Vec<DeviceWork>, CudaSlice<f32>)> {
    let PlanKernels { kernel_of, mut gemms, .. } = pk;
    let zeros = |len: usize| gpu.stream.alloc_zeros::<f32>(len.max(1)).map_err(driver);
    let mut work = Vec::with_capacity(plan.steps.len());
    for (i, s) in plan.steps.iter().enumerate() {
        work.push(match &s.work {
            Work::Input { .. } => DeviceWork::Input,
            Work::Fused(_) => {
                let (f, launch, name) = functions[kernel_of[&i]].clone();
                DeviceWork::Fused { f, launch, name }
            }
            Work::Gemm(_) => {
                let gw = gemms.remove(&i).expect("planned");
                let mut copies = vec![];
                for (o, j, len) in gw.copies {
                    let (f, launch, _) = functions[j].clone();
                    copies.push((o, f, launch, zeros(len)?));
                }
                let unpermute = match gw.unpermute {
                    Some((j, len)) => {
                        let (f, launch, _) = functions[j].clone();
                        Some((f, launch, zeros(len)?))
                    }
                    None => None,
                };
                let gathered = gpu.gather(&gw.bp)?;
                DeviceWork::Gemm { bp: gw.bp, copies, unpermute, gathered }
            }
            Work::Value(v) => DeviceWork::Value(*v),
            Work::AllReduce(r) => match nccl {
                Some(n) => DeviceWork::AllReduce(Op::of(r.scale, n.world, &r.name)?),
                None => {
                    return Err(Error::Backend(format!(
                        "this step all-reduces `{}` over the ranks of a data-parallel run, and the executor has \
                         no process group (Executor::set_collective)",
                        r.name
                    )))
                }
            },
            Work::Other => unreachable!("rejected by plan_kernels"),
        });
    }
    let arena = gpu.stream.alloc_zeros::<f32>((plan.arena_bytes / 4).max(1)).map_err(driver)?;
    Ok((work, arena))
}

impl DevicePlan {
    /// Kernels and cuBLAS calls one run launches (input copies and unpermutes included).
    pub(super) fn launches(&self) -> usize {
        self.work
            .iter()
            .map(|w| match w {
                DeviceWork::Fused { .. } | DeviceWork::Value(_) | DeviceWork::AllReduce(_) => 1,
                DeviceWork::Gemm { bp, copies, unpermute, gathered } => {
                    // a gathered product: the pointer kernel and one call
                    let calls = if gathered.is_some() { 2 } else { bp.calls.len() };
                    calls + copies.len() + unpermute.is_some() as usize + bp.zero_fill as usize
                }
                DeviceWork::Input => 0,
            })
            .sum()
    }
}

impl DeviceWork {
    /// What a profile calls this step: kernel and launch shape, or product and its calls.
    pub(super) fn describe(&self) -> String {
        match self {
            DeviceWork::Fused { name, launch, .. } => match launch {
                Launch::Flat { total } => format!("fused {name} ({total} elements)"),
                Launch::Rows { rows, row_len, split, .. } => {
                    format!("fused {name} ({rows} rows of {row_len}, {split} blocks each)")
                }
            },
            DeviceWork::Gemm { bp, copies, unpermute, gathered } => {
                let Some(c) = bp.calls.first() else { return "gemm (no calls: zero fill)".into() };
                let calls = match gathered {
                    Some(g) => format!("batch {}, 1 gathered call", g.len()),
                    None if bp.calls.len() == 1 => format!("batch {}, 1 call", c.batch),
                    None => format!("batch {}, {} calls", c.batch, bp.calls.len()),
                };
                format!(
                    "gemm {}x{}x{} ({calls}{}{})",
                    c.rows,
                    c.cols,
                    c.k,
                    if copies.is_empty() { "" } else { " + input copies" },
                    if unpermute.is_some() { " + unpermute" } else { "" }
                )
            }
            DeviceWork::AllReduce(_) => "allreduce copy".into(),
            _ => "value".into(),
        }
    }
}
