//! The GPU: driver, NVRTC and cuBLAS loaded at run time through cudarc, and the operations
//! the CUDA backend is built from: compiling generated kernels (cached by source), launching a
//! fused kernel, running a planned contraction on cuBLAS.
//!
//! Nothing CUDA is linked at build time (`cudarc` with `dynamic-loading`), so the `cuda`
//! feature builds on any machine; [`Gpu::open`] checks that every library can be loaded
//! before cudarc would panic on a missing one, and says what it looked for.
use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::CompileOptions;

use super::blas::{BlasPlan, Operand, Trans};
use super::codegen::{kernel_source, KernelSource, Launch, CUDA_PRELUDE};
use crate::backend::plan::FusedKernel;
use crate::backend::plan::GemmPlan;
use crate::error::{Error, Result};

/// A library the backend loads at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaLib {
    Driver,
    Nvrtc,
    Cublas,
}

impl CudaLib {
    fn stem(self) -> &'static str {
        match self {
            CudaLib::Driver => "cuda",
            CudaLib::Nvrtc => "nvrtc",
            CudaLib::Cublas => "cublas",
        }
    }

    fn what(self) -> &'static str {
        match self {
            CudaLib::Driver => "the NVIDIA driver's libcuda (installed with the driver, not with the toolkit)",
            CudaLib::Nvrtc => "NVRTC, CUDA's run-time compiler (toolkit, or pip package nvidia-cuda-nvrtc)",
            CudaLib::Cublas => "cuBLAS (toolkit, or pip package nvidia-cublas)",
        }
    }

    /// Whether the library can be loaded now.
    pub fn present(self) -> bool {
        // SAFETY: only tries to dlopen the candidate names.
        unsafe {
            match self {
                CudaLib::Driver => cudarc::driver::sys::is_culib_present(),
                CudaLib::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
                CudaLib::Cublas => cudarc::cublas::sys::is_culib_present(),
            }
        }
    }

    /// The error for a library that cannot be loaded: what it is, the names tried, and
    /// where the loader looks.
    pub fn missing(self) -> Error {
        let names = cudarc::get_lib_name_candidates(self.stem());
        // the Linux names (`libcuda.so`, `libcuda.so.1`, ...), not the Windows-style ones
        let plain = format!("lib{}.so", self.stem());
        let shown: Vec<&str> = names.iter().map(String::as_str).filter(|n| n.starts_with(&plain)).collect();
        Error::Backend(format!(
            "CUDA: cannot load {} — tried {} (and {} other names); add the directory holding it to \
             LD_LIBRARY_PATH (currently {:?})",
            self.what(),
            shown.join(", "),
            names.len() - shown.len(),
            std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
        ))
    }
}

/// Check that the libraries can be loaded; the first missing one is the error.
pub fn check_libraries(libs: &[CudaLib]) -> Result<()> {
    match libs.iter().find(|l| !l.present()) {
        Some(l) => Err(l.missing()),
        None => Ok(()),
    }
}

fn driver(e: impl std::fmt::Debug) -> Error {
    Error::Backend(format!("CUDA: {e:?}"))
}

/// Compile kernel sources to PTX for `arch` (e.g. `compute_90`) with NVRTC; needs only
/// libnvrtc, no GPU. Errors carry NVRTC's log and the source.
pub fn compile_ptx(sources: &[KernelSource], arch: &'static str) -> Result<cudarc::nvrtc::Ptx> {
    check_libraries(&[CudaLib::Nvrtc])?;
    let mut src = String::from(CUDA_PRELUDE);
    for s in sources {
        src.push_str(&s.code);
    }
    let opts = CompileOptions { arch: Some(arch), options: vec!["--std=c++17".into()], ..Default::default() };
    cudarc::nvrtc::compile_ptx_with_opts(&src, opts)
        .map_err(|e| Error::Backend(format!("NVRTC could not compile the generated kernels: {e:?}\n{src}")))
}

/// Writes the matrix pointers of a gathered product: `ptrs[w * n + j] = base_w + 4 * offs[w * n + j]`
/// for the three operands `w` (X, Y, C).
pub(super) const FILL_PTRS: &str = r#"extern "C" __global__ void dino_fill_ptrs(const long long* offs, unsigned long long* ptrs,
        unsigned long long x, unsigned long long y, unsigned long long c, int n) {
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
        ptrs[j] = x + 4ull * offs[j];
        ptrs[n + j] = y + 4ull * offs[n + j];
        ptrs[2 * n + j] = c + 4ull * offs[2 * n + j];
    }
}
"#;

/// A product's calls gathered into one pointer-array call ([`BlasPlan::gathered`]): the
/// matrices' offsets on the device and room for their pointers, written before each call.
pub struct Gathered {
    offs: CudaSlice<i64>,
    ptrs: CudaSlice<u64>,
    n: usize,
}

impl Gathered {
    /// Matrices in the one call.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// NVRTC's name of a compute capability (`compute_90`): cudarc takes a `&'static str`.
pub(super) fn arch_name(major: i32, minor: i32) -> Option<&'static str> {
    const KNOWN: [(i32, i32, &str); 20] = [
        (5, 0, "compute_50"),
        (5, 2, "compute_52"),
        (5, 3, "compute_53"),
        (6, 0, "compute_60"),
        (6, 1, "compute_61"),
        (6, 2, "compute_62"),
        (7, 0, "compute_70"),
        (7, 2, "compute_72"),
        (7, 5, "compute_75"),
        (8, 0, "compute_80"),
        (8, 6, "compute_86"),
        (8, 7, "compute_87"),
        (8, 9, "compute_89"),
        (9, 0, "compute_90"),
        (10, 0, "compute_100"),
        (10, 1, "compute_101"),
        (10, 3, "compute_103"),
        (11, 0, "compute_110"),
        (12, 0, "compute_120"),
        (12, 1, "compute_121"),
    ];
    KNOWN.iter().find(|k| k.0 == major && k.1 == minor).map(|k| k.2)
}

/// One GPU, its stream, cuBLAS handle and compiled kernels.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    blas: CudaBlas,
    arch: &'static str,
    kernels: HashMap<String, CudaFunction>,
    /// The pointer kernel of gathered products: compiled by NVRTC when first needed, or
    /// loaded from an artifact ([`Gpu::set_fill_ptrs`]).
    fill_ptrs: std::sync::OnceLock<CudaFunction>,
    /// Multiprocessors, for launch shapes.
    pub sms: usize,
}

impl Gpu {
    /// Open device `ordinal`; a clear error when the libraries or a device are missing.
    pub fn open(ordinal: usize) -> Result<Gpu> {
        // NVRTC is checked when a kernel is first compiled: a compiled artifact runs without it
        check_libraries(&[CudaLib::Driver, CudaLib::Cublas])?;
        let ctx = CudaContext::new(ordinal).map_err(|e| {
            Error::Backend(format!("CUDA: no usable GPU {ordinal} ({e:?}); `nvidia-smi` lists the devices"))
        })?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(driver)?;
        use cudarc::driver::sys::CUdevice_attribute as A;
        let major = ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).map_err(driver)?;
        let minor = ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).map_err(driver)?;
        let sms = ctx.attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(driver)? as usize;
        let arch = arch_name(major, minor).ok_or_else(|| {
            Error::Backend(format!("CUDA: compute capability {major}.{minor} is not one this build knows for NVRTC"))
        })?;
        let gpu = Gpu { ctx, stream, blas, arch, kernels: HashMap::new(), fill_ptrs: Default::default(), sms };
        if std::env::var("DINO_CUDA_TF32").map(|v| v == "1").unwrap_or(false) {
            gpu.set_tf32(true)?;
        }
        Ok(gpu)
    }

    /// The pointer kernel of gathered products, compiled by NVRTC on first use unless an
    /// artifact gave it.
    fn fill_ptrs(&self) -> Result<&CudaFunction> {
        if let Some(f) = self.fill_ptrs.get() {
            return Ok(f);
        }
        let opts = CompileOptions { arch: Some(self.arch), ..Default::default() };
        check_libraries(&[CudaLib::Nvrtc])?;
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(FILL_PTRS, opts)
            .map_err(|e| Error::Backend(format!("NVRTC could not compile the pointer kernel: {e:?}")))?;
        let f = self.ctx.load_module(ptx).map_err(driver)?.load_function("dino_fill_ptrs").map_err(driver)?;
        Ok(self.fill_ptrs.get_or_init(|| f))
    }

    /// The pointer kernel, loaded from a compiled artifact (no NVRTC).
    pub(super) fn set_fill_ptrs(&self, f: CudaFunction) {
        let _ = self.fill_ptrs.set(f);
    }

    /// Let cuBLAS run fp32 products on tensor cores in TF32 (10-bit mantissa inputs, fp32
    /// accumulation): several times faster on Ampere and later, at ~1e-3 relative error per
    /// product. Off by default; `DINO_CUDA_TF32=1` turns it on at [`Gpu::open`].
    pub fn set_tf32(&self, on: bool) -> Result<()> {
        use cudarc::cublas::sys::cublasMath_t as M;
        let mode = if on { M::CUBLAS_TF32_TENSOR_OP_MATH } else { M::CUBLAS_DEFAULT_MATH };
        // SAFETY: a valid handle owned by `self.blas`.
        let st = unsafe { cudarc::cublas::sys::cublasSetMathMode(*self.blas.handle(), mode) };
        if st != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(Error::Backend(format!("cuBLAS: cannot set the math mode: {st:?}")));
        }
        Ok(())
    }

    /// The NVRTC target of this device (`compute_90` on Hopper).
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// The device's name and compute capability.
    pub fn describe(&self) -> String {
        format!("{} ({}, {} SMs)", self.ctx.name().unwrap_or_default(), self.arch, self.sms)
    }

    /// The compiled function for `src`, compiling it on first use.
    pub fn function(&mut self, src: &KernelSource) -> Result<CudaFunction> {
        let key = format!("{}\n{}", src.name, src.code);
        if let Some(f) = self.kernels.get(&key) {
            return Ok(f.clone());
        }
        let ptx = compile_ptx(std::slice::from_ref(src), self.arch)?;
        let module = self.ctx.load_module(ptx).map_err(driver)?;
        let f = module.load_function(&src.name).map_err(driver)?;
        self.kernels.insert(key, f.clone());
        Ok(f)
    }

    pub fn upload(&self, v: &[f32]) -> Result<CudaSlice<f32>> {
        self.stream.clone_htod(if v.is_empty() { &[0f32][..] } else { v }).map_err(driver)
    }

    pub fn download(&self, v: &CudaSlice<f32>, n: usize) -> Result<Vec<f32>> {
        let mut all = self.stream.clone_dtoh(v).map_err(driver)?;
        all.truncate(n);
        Ok(all)
    }

    /// Run a bound fused kernel on device buffers.
    pub fn run_fused(&mut self, k: &FusedKernel, inputs: &[&CudaSlice<f32>], out: &mut CudaSlice<f32>) -> Result<()> {
        self.run_source(&kernel_source(k, "fused"), inputs, out)
    }

    /// Run a generated kernel's source (compiled on first use) on device buffers.
    pub fn run_source(
        &mut self,
        src: &KernelSource,
        inputs: &[&CudaSlice<f32>],
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let f = self.function(src)?;
        let ins: Vec<u64> = inputs.iter().map(|b| b.device_ptr(&self.stream).0).collect();
        let o = out.device_ptr(&self.stream).0;
        // SAFETY: the kernel reads each input inside the extent of its view (the buffers were
        // sized from the same layouts) and writes `out_len` elements of `out`.
        unsafe { self.launch(&f, src.launch, &ins, o) }
    }

    /// The device side of [`BlasPlan::gathered`], if the plan gathers.
    pub fn gather(&self, bp: &BlasPlan) -> Result<Option<Gathered>> {
        let Some(mats) = bp.gathered() else { return Ok(None) };
        let n = mats.len();
        let offs: Vec<i64> = (0..3).flat_map(|w| mats.iter().map(move |m| m[w])).collect();
        let offs = self.stream.clone_htod(&offs).map_err(driver)?;
        let ptrs = self.stream.alloc_zeros::<u64>(3 * n).map_err(driver)?;
        Ok(Some(Gathered { offs, ptrs, n }))
    }

    /// Run a contraction cuBLAS can read in place.
    pub fn run_gemm(
        &self,
        plan: &GemmPlan,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let bp = BlasPlan::new(plan).map_err(|e| Error::Backend(format!("cuBLAS cannot read this product: {e:?}")))?;
        let g = self.gather(&bp)?;
        let (pa, pb, po) = (a.device_ptr(&self.stream).0, b.device_ptr(&self.stream).0, out.device_ptr(&self.stream).0);
        // SAFETY: as `blas_calls`.
        unsafe { self.blas_calls(&bp, g.as_ref(), pa, pb, po, plan.out_len()) }
    }

    /// Launch a generated kernel with these input pointers and output pointer.
    ///
    /// # Safety
    /// The pointers must address live device buffers covering what the kernel reads and writes.
    pub unsafe fn launch(&self, f: &CudaFunction, launch: Launch, inputs: &[u64], out: u64) -> Result<()> {
        if let Launch::Rows { zero, .. } = launch {
            if zero > 0 {
                // split sums add into the output: start it at zero
                cudarc::driver::result::memset_d8_async(out, 0, zero * 4, self.stream.cu_stream()).map_err(driver)?;
            }
        }
        let (grid, block) = launch.grid_block(self.sms);
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
        let mut b = self.stream.launch_builder(f);
        for p in inputs {
            b.arg(p);
        }
        b.arg(&out);
        b.launch(cfg).map_err(driver)?;
        Ok(())
    }

    /// Run a contraction's planned cuBLAS calls on device pointers: A at `a`, B at `b`, the
    /// `out_len`-element output at `out`.
    ///
    /// # Safety
    /// The plan's offsets, leading dimensions and strides must address elements inside the
    /// buffers (they do for buffers sized from the views the plan came from; checked on the
    /// host by `blas::emulate`'s tests).
    pub unsafe fn blas_calls(
        &self,
        bp: &BlasPlan,
        gathered: Option<&Gathered>,
        a: u64,
        b: u64,
        out: u64,
        out_len: usize,
    ) -> Result<()> {
        if bp.zero_fill {
            cudarc::driver::result::memset_d8_async(out, 0, out_len * 4, self.stream.cu_stream()).map_err(driver)?;
        }
        let op = |t: Trans| if t == Trans::N { cublasOperation_t::CUBLAS_OP_N } else { cublasOperation_t::CUBLAS_OP_T };
        let pick = |o: Operand| if o == Operand::A { a } else { b };
        if let Some(g) = gathered {
            // the matrices' pointers from this run's buffers, then one call for all of them
            let c = &bp.calls[0];
            let (offs, ptrs) = (g.offs.device_ptr(&self.stream).0, g.ptrs.device_ptr(&self.stream).0);
            let (x, y, n) = (pick(c.x), pick(c.y), g.n as i32);
            let cfg = LaunchConfig {
                grid_dim: ((g.n as u32).div_ceil(256), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut l = self.stream.launch_builder(self.fill_ptrs()?);
            l.arg(&offs).arg(&ptrs).arg(&x).arg(&y).arg(&out).arg(&n);
            l.launch(cfg).map_err(driver)?;
            let (one, zero) = (1.0f32, 0.0f32);
            let p = ptrs as *const *const f32;
            let st = cudarc::cublas::sys::cublasSgemmBatched(
                *self.blas.handle(),
                op(c.trans_x),
                op(c.trans_y),
                c.rows,
                c.cols,
                c.k,
                &one,
                p,
                c.ld_x,
                p.add(g.n),
                c.ld_y,
                &zero,
                (ptrs as *const *mut f32).add(2 * g.n),
                c.ld_c,
                n,
            );
            if st != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(Error::Backend(format!("cuBLAS: gathered product failed: {st:?}")));
            }
            return Ok(());
        }
        let (alpha, at) = (1.0f32, |p: u64, off: i64| (p + off as u64 * 4) as *const f32);
        for c in &bp.calls {
            cudarc::cublas::result::sgemm_strided_batched(
                *self.blas.handle(),
                op(c.trans_x),
                op(c.trans_y),
                c.rows,
                c.cols,
                c.k,
                &alpha,
                at(pick(c.x), c.off_x),
                c.ld_x,
                c.stride_x,
                at(pick(c.y), c.off_y),
                c.ld_y,
                c.stride_y,
                &c.beta,
                at(out, c.off_c) as *mut f32,
                c.ld_c,
                c.stride_c,
                c.batch,
            )
            .map_err(driver)?;
        }
        Ok(())
    }
}
