//! Choosing a device: the one place above the backends that names a concrete runtime.
//!
//! Every command that runs a network takes `--device cpu|cuda`, checks it once
//! ([`Device::check`]) and gets an [`Executor`] per compiled graph ([`Device::executor`]); the
//! trainers, evaluators and benchmarks talk to that trait only. A test or CI step
//! (`tests/layering.rs`) fails when another facade file names a runtime.
use dino_runtime::artifact::Target;
use dino_runtime::backend::executor::Executor;
use dino_runtime::backend::plan::{Plan, Policy};
use dino_runtime::Result;
use luminal::prelude::Graph;

/// Where networks run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// This machine's cores.
    #[default]
    Cpu,
    /// An NVIDIA GPU (a binary built with `--features cuda`): the first, or under a launcher
    /// the one of this process's local rank (one process per GPU). Weights and state stay on
    /// the GPU between steps; inputs go up, what is read comes back.
    Cuda,
}

/// Options of a device, as the trainers and benchmarks set them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Let cuBLAS run fp32 products in TF32 (`DINO_CUDA_TF32=1` sets it too).
    pub tf32: bool,
    /// The storage type of each buffer (the precision pass's policy). The CPU holds every
    /// buffer as f32 and emulates bf16 by rounding each bf16 store.
    pub policy: Policy,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

impl Device {
    /// Fail now, with the one clear error, if this device cannot be used here (a build without
    /// the backend, no GPU, a missing library), rather than after a dataset was loaded.
    pub fn check(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda => dino_runtime::backend::cuda::device::Gpu::open(gpu_ordinal()).map(drop),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => Err(no_cuda()),
        }
    }

    /// An executor of the compiled graph `cx` on this device.
    pub fn executor(self, cx: &Graph) -> Result<Box<dyn Executor>> {
        self.executor_with(cx, DeviceOptions::default())
    }

    /// An executor of a compiled artifact's program on this device: nothing is compiled or
    /// planned (a CUDA program's kernels are loaded from its CUBIN, or its PTX on a newer GPU).
    pub fn executor_of(self, program: dino_runtime::artifact::CompiledProgram) -> Result<Box<dyn Executor>> {
        match self {
            Device::Cpu => Ok(Box::new(dino_runtime::backend::cpu::CpuRuntime::from_plan(program.plan))),
            #[cfg(feature = "cuda")]
            Device::Cuda => {
                use dino_runtime::backend::cuda::{device::Gpu, runtime::CudaRuntime};
                let code = program.code.ok_or_else(|| dino_runtime::Error::Config {
                    what: "--compiled with --device cuda".into(),
                    why: "the program holds no CUDA code: compile it with `dino compile --device cuda --arch sm_XY`"
                        .into(),
                })?;
                Ok(Box::new(CudaRuntime::from_artifact(Gpu::open(gpu_ordinal())?, program.plan, &code)?))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => Err(no_cuda()),
        }
    }

    /// What an artifact compiled for this device targets: any CPU, or the GPU architecture
    /// named by `arch` (`sm_90`), whose kernels are compiled to CUBIN here (no GPU needed).
    pub fn target(self, arch: Option<&str>) -> Result<Target> {
        let config = |what: String, why: &str| dino_runtime::Error::Config { what, why: why.into() };
        match (self, arch) {
            (Device::Cpu, None) => Ok(Target::Cpu),
            (Device::Cpu, Some(a)) => {
                Err(config(format!("--arch {a}"), "an architecture is for --device cuda only (a CPU plan runs on any CPU)"))
            }
            (Device::Cuda, None) => Err(config(
                "--device cuda without --arch".into(),
                "name the GPU architecture the kernels are compiled for: sm_90 (H100, H200), sm_80 (A100), sm_89 (L4); \
                 `nvidia-smi --query-gpu=compute_cap --format=csv` prints yours (9.0 is sm_90)",
            )),
            #[cfg(feature = "cuda")]
            (Device::Cuda, Some(a)) => {
                let arch: dino_runtime::backend::cuda::artifact::Arch =
                    a.parse().map_err(|why: String| config(format!("--arch {a}"), &why))?;
                Ok(Target::Cuda { arch: arch.to_string() })
            }
            #[cfg(not(feature = "cuda"))]
            (Device::Cuda, Some(_)) => Err(no_cuda()),
        }
    }

    /// The target for this machine's own device: the CPU, or the architecture of the GPU here
    /// (opened to ask it).
    pub fn own_target(self) -> Result<Target> {
        match self {
            Device::Cpu => Ok(Target::Cpu),
            #[cfg(feature = "cuda")]
            Device::Cuda => {
                let gpu = dino_runtime::backend::cuda::device::Gpu::open(gpu_ordinal())?;
                self.target(Some(gpu.arch()))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => Err(no_cuda()),
        }
    }

    /// The code a program for `target` carries beside its plan `plan` of the compiled graph
    /// `cx`, and a line saying what it is: for CUDA every kernel as CUBIN and PTX (NVRTC, no
    /// GPU); nothing for the CPU.
    pub fn compile_code(target: &Target, plan: &Plan, cx: &Graph) -> Result<Option<(Vec<u8>, String)>> {
        match target {
            Target::Cpu => Ok(None),
            #[cfg(feature = "cuda")]
            Target::Cuda { arch } => {
                use dino_runtime::backend::cuda::artifact::{compile, Arch};
                let arch: Arch = arch
                    .parse()
                    .map_err(|why: String| dino_runtime::Error::Config { what: format!("architecture {arch}"), why })?;
                let (bytes, r) = compile(plan, cx, arch)?;
                let line = format!(
                    "{} CUDA kernels in {} modules: {arch} CUBIN {:.0} KB + PTX {:.0} KB (NVRTC {:.2} s)",
                    r.kernels,
                    r.modules,
                    r.cubin_bytes as f64 / 1024.0,
                    r.ptx_bytes as f64 / 1024.0,
                    r.seconds
                );
                Ok(Some((bytes, line)))
            }
            #[cfg(not(feature = "cuda"))]
            Target::Cuda { .. } => {
                let _ = (plan, cx);
                Err(no_cuda())
            }
        }
    }

    /// [`Self::executor`] with options.
    pub fn executor_with(self, cx: &Graph, opts: DeviceOptions) -> Result<Box<dyn Executor>> {
        match self {
            Device::Cpu => Ok(Box::new(dino_runtime::backend::cpu::CpuRuntime::with_policy(cx, opts.policy))),
            Device::Cuda if !opts.policy.is_fp32() => Err(dino_runtime::Error::Config {
                what: format!("precision {} on --device cuda", opts.policy),
                why: "the CUDA backend runs fp32 plans only so far (bf16 kernels and cuBLASLt calls are issue 12's GPU work)"
                    .into(),
            }),
            #[cfg(feature = "cuda")]
            Device::Cuda => {
                use dino_runtime::backend::cuda::{device::Gpu, runtime::CudaRuntime};
                let gpu = Gpu::open(gpu_ordinal())?;
                if opts.tf32 {
                    gpu.set_tf32(true)?;
                }
                Ok(Box::new(CudaRuntime::new(gpu, cx)))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => {
                let _ = opts;
                Err(no_cuda())
            }
        }
    }
}

/// The GPU of this process: its local rank under a launcher (torchrun's `LOCAL_RANK`
/// convention: one process per GPU), else the first.
#[cfg(feature = "cuda")]
fn gpu_ordinal() -> usize {
    dino_runtime::dist::Launch::from_env().map(|l| l.local_rank).unwrap_or(0)
}

#[cfg(not(feature = "cuda"))]
fn no_cuda() -> dino_runtime::Error {
    dino_runtime::Error::Config {
        what: "--device cuda".into(),
        why: "this binary was built without the CUDA backend: build it with `cargo build --release --features cuda`"
            .into(),
    }
}

/// The device the test suites run on: `DINO_TEST_DEVICE=cuda` (a `--features cuda` build on a
/// GPU machine, `scripts/gpu-check.sh`) or the CPU. The same suites run on either (dfdx's
/// `TestDevice` habit).
pub fn test_device() -> Device {
    match std::env::var("DINO_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda,
        _ => Device::Cpu,
    }
}

/// What the test suites hold: an executor of [`test_device`].
pub type TestExecutor = Box<dyn Executor>;

/// The executor of [`test_device`] for `cx`; panics with the reason when that device cannot
/// be opened (a test asked for a GPU that is not there).
pub fn test_executor(cx: &Graph) -> TestExecutor {
    let d = test_device();
    d.executor(cx).unwrap_or_else(|e| panic!("DINO_TEST_DEVICE={d}: {e}"))
}
