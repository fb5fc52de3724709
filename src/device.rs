//! Choosing a device: the one place above the backends that names a concrete runtime.
//!
//! Every command that runs a network takes `--device cpu|cuda`, checks it once
//! ([`Device::check`]) and gets an [`Executor`] per compiled graph ([`Device::executor`]); the
//! trainers, evaluators and benchmarks talk to that trait only. A test or CI step
//! (`tests/layering.rs`) fails when another facade file names a runtime.
use dino_runtime::backend::executor::Executor;
use dino_runtime::backend::plan::Policy;
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
    /// planned.
    pub fn executor_of(self, program: dino_runtime::artifact::CompiledProgram) -> Result<Box<dyn Executor>> {
        match self {
            Device::Cpu => Ok(Box::new(dino_runtime::backend::cpu::CpuRuntime::from_plan(program.plan))),
            Device::Cuda => Err(dino_runtime::Error::Config {
                what: "--compiled with --device cuda".into(),
                why: "compiled artifacts hold CPU plans only so far".into(),
            }),
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
