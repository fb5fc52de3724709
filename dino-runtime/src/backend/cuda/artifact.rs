//! CUDA programs in compiled artifacts: a plan's kernels as CUBIN for one GPU architecture and
//! as PTX for newer ones, with the contraction recipes that needed the graph, so that a
//! machine with only the NVIDIA driver runs the plan (no graph, no passes, no NVRTC).
//!
//! ```text
//!  dino compile --device cuda --arch sm_90              dino train --compiled FILE --device cuda
//!  plan + graph ──gemm_recipes──► recipes ─┐            `<program>.plan` ─► Plan::from_bytes (validated)
//!  plan ─────────plan_kernels─────────────►│ sources    `<program>.code` ─► CudaCode::read
//!        NVRTC per module of 32 kernels ◄──┘                 │ recipes' kernels and calls checked
//!        │ CUBIN (sm_90) + PTX (.target sm_90)               │   against the plan's buffer sizes
//!        └──► `<program>.code` section ─────────────────────►│ sources made again from plan + recipes,
//!                                                            │   names and checksums compared
//!                                                            └─► the driver loads the CUBIN (same major,
//!                                                                minor at least) or JITs the PTX (newer GPU)
//! ```
//!
//! The CUBIN is machine code: the checks make sure it belongs to this plan and was built for
//! this GPU (ELF machine and architecture), and the file's checksums that it is the bytes that
//! were written; they cannot prove what an altered-and-rechecksummed file's code does, as with
//! any shared library.
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};

use luminal::prelude::Graph;
use serde::{Deserialize, Serialize};

use super::blas::GemmRecipe;
use super::codegen::{KernelSource, CUDA_PRELUDE};
use super::device::{check_libraries, CudaLib, FILL_PTRS};
use super::plan::{gemm_recipes, plan_kernels, PlanKernels};
use crate::backend::plan::wire::check_kernel;
use crate::backend::plan::{Plan, Work};
use crate::error::{Error, Result};

/// Kernels per NVRTC program (and per loaded module): modules compile in parallel.
const MODULE_KERNELS: usize = 32;
/// ELF's machine number of NVIDIA GPU code.
const EM_CUDA: u16 = 190;

/// A GPU architecture (compute capability), written as NVRTC and nvcc write it: `sm_90`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arch {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sm_{}{}", self.major, self.minor)
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    /// `sm_90`, `sm_86`, `sm_100` (also `compute_90`, a GPU's name in this crate).
    fn from_str(s: &str) -> std::result::Result<Arch, String> {
        let digits = s.strip_prefix("sm_").or_else(|| s.strip_prefix("compute_")).unwrap_or("");
        if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "`{s}` is not a GPU architecture: write it as nvcc does, e.g. sm_90 (H100, H200), sm_80 (A100), \
                 sm_89 (L4, RTX 40xx), sm_120 (RTX 50xx){}",
                if digits.ends_with('a') || digits.ends_with('f') {
                    "; variants with a suffix are not supported"
                } else {
                    ""
                }
            ));
        }
        let (major, minor) = digits.split_at(digits.len() - 1);
        let arch = Arch {
            major: major.parse().map_err(|_| format!("`{s}`: no major version"))?,
            minor: minor.parse().expect("a digit"),
        };
        if super::device::arch_name(arch.major as i32, arch.minor as i32).is_none() {
            return Err(format!("{arch} is not an architecture this build's NVRTC targets"));
        }
        Ok(arch)
    }
}

/// What a GPU loads from a file compiled for another (or the same) architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    /// The machine code: the same major version, a minor at least the file's (CUDA's binary
    /// compatibility rule).
    Cubin,
    /// The PTX, compiled by the driver when the module loads: a newer major version.
    Ptx,
}

/// Which image of a file built for `built` a GPU of architecture `device` loads, or why it
/// cannot run the file.
pub fn image_for(built: Arch, device: Arch) -> std::result::Result<Image, String> {
    if device.major == built.major && device.minor >= built.minor {
        Ok(Image::Cubin)
    } else if device > built {
        Ok(Image::Ptx)
    } else {
        Err(format!(
            "it was compiled for {built}, this GPU is {device}, which cannot run {built} code: compile it again with \
             `--arch {device}`"
        ))
    }
}

/// One NVRTC program: its kernels' names, the checksum of its source, and what it compiled to.
#[derive(Serialize, Deserialize)]
struct Module {
    kernels: Vec<String>,
    source_crc32: u32,
    cubin: Vec<u8>,
    ptx: String,
}

/// The CUDA section of one program of an artifact.
#[derive(Serialize, Deserialize)]
pub struct CudaCode {
    arch: String,
    recipes: BTreeMap<usize, GemmRecipe>,
    modules: Vec<Module>,
    /// The runtime's own kernels (the pointer kernel of gathered products), so that no
    /// compiler is needed at start.
    helpers: Module,
}

/// The helper kernels' source and names.
const HELPERS: (&str, &str) = (FILL_PTRS, "dino_fill_ptrs");

/// What [`compile`] made.
#[derive(Debug, Clone)]
pub struct CodeReport {
    pub kernels: usize,
    pub modules: usize,
    pub cubin_bytes: usize,
    pub ptx_bytes: usize,
    pub seconds: f64,
}

fn module_source(sources: &[KernelSource]) -> String {
    let mut src = String::from(CUDA_PRELUDE);
    for s in sources {
        src.push_str(&s.code);
    }
    src
}

fn crc(s: &str) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(s.as_bytes());
    h.finalize()
}

fn bin(limit: u64) -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding().with_limit(limit)
}

/// `src` through NVRTC for `arch`: the CUBIN and the PTX it was assembled from. Needs only
/// libnvrtc, no GPU.
pub fn nvrtc(src: &str, arch: Arch) -> Result<(Vec<u8>, String)> {
    use cudarc::nvrtc::{result, sys};
    check_libraries(&[CudaLib::Nvrtc])?;
    let fail = |what: &str, e: &dyn std::fmt::Debug| Error::Backend(format!("NVRTC ({arch}): {what}: {e:?}"));
    let code = CString::new(src).map_err(|e| fail("the source", &e))?;
    let prog = result::create_program(&code, None).map_err(|e| fail("create", &e))?;
    let opts = [format!("--gpu-architecture={arch}"), "--std=c++17".to_string()];
    // SAFETY: `prog` was created above and is destroyed once, below; the buffers are sized
    // by NVRTC's own size queries.
    let out = unsafe {
        let compiled = result::compile_program(prog, &opts);
        let log = result::get_program_log(prog).map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned());
        let out = match compiled {
            Err(e) => Err(Error::Backend(format!(
                "NVRTC could not compile the generated kernels for {arch}: {e:?}\n{}",
                log.unwrap_or_default()
            ))),
            Ok(()) => (|| {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| fail("CUBIN size", &e))?;
                let mut cubin = vec![0u8; size];
                sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char).result().map_err(|e| fail("CUBIN", &e))?;
                let ptx = result::get_ptx(prog).map_err(|e| fail("PTX", &e))?;
                let ptx = CStr::from_ptr(ptx.as_ptr()).to_string_lossy().into_owned();
                Ok((cubin, ptx))
            })(),
        };
        let _ = result::destroy_program(prog);
        out
    };
    out
}

/// The architecture a CUBIN's ELF header names, or why it is not one.
pub fn cubin_arch(cubin: &[u8]) -> std::result::Result<Arch, String> {
    if cubin.len() < 52 || &cubin[..4] != b"\x7fELF" || cubin[4] != 2 || cubin[5] != 1 {
        return Err("not a 64-bit little-endian ELF image".into());
    }
    let machine = u16::from_le_bytes([cubin[18], cubin[19]]);
    if machine != EM_CUDA {
        return Err(format!("ELF machine {machine}, not CUDA ({EM_CUDA})"));
    }
    let flags = u32::from_le_bytes(cubin[48..52].try_into().expect("4 bytes"));
    // ELF ABI version 8 (CUDA 12.8 and later) keeps the architecture in bits 8..16 of
    // e_flags, earlier versions in bits 0..8
    let sm = if cubin[8] >= 8 { (flags >> 8) & 0xff } else { flags & 0xff };
    Ok(Arch { major: sm / 10, minor: sm % 10 })
}

/// Compile `plan` (of the compiled graph `cx`, at its current dynamic dims) for `arch`: the
/// bytes of its `.code` section.
pub fn compile(plan: &Plan, cx: &Graph, arch: Arch) -> Result<(Vec<u8>, CodeReport)> {
    let t0 = std::time::Instant::now();
    let recipes = gemm_recipes(plan, cx)?;
    let pk = plan_kernels(plan, &recipes)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
    let chunks: Vec<&[KernelSource]> = pk.sources.chunks(MODULE_KERNELS).collect();
    let compiled: Vec<Result<(Vec<u8>, String)>> = std::thread::scope(|sc| {
        let per = chunks.len().div_ceil(threads).max(1);
        let jobs: Vec<_> = chunks
            .chunks(per)
            .map(|group| sc.spawn(move || group.iter().map(|c| nvrtc(&module_source(c), arch)).collect::<Vec<_>>()))
            .collect();
        jobs.into_iter().flat_map(|j| j.join().expect("NVRTC thread")).collect()
    });
    let (cubin, ptx) = nvrtc(HELPERS.0, arch)?;
    let helpers = Module { kernels: vec![HELPERS.1.into()], source_crc32: crc(HELPERS.0), cubin, ptx };
    let mut modules = vec![];
    for (c, r) in chunks.iter().zip(compiled) {
        let (cubin, ptx) = r?;
        modules.push(Module {
            kernels: c.iter().map(|s| s.name.clone()).collect(),
            source_crc32: crc(&module_source(c)),
            cubin,
            ptx,
        });
    }
    let report = CodeReport {
        kernels: pk.sources.len(),
        modules: modules.len(),
        cubin_bytes: modules.iter().map(|m| m.cubin.len()).sum(),
        ptx_bytes: modules.iter().map(|m| m.ptx.len()).sum(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    use bincode::Options;
    let bytes = bin(u64::MAX)
        .serialize(&CudaCode { arch: arch.to_string(), recipes, modules, helpers })
        .map_err(|e| Error::Backend(format!("the CUDA section: {e}")))?;
    Ok((bytes, report))
}

impl CudaCode {
    /// Decode a `.code` section (checksummed by the artifact; checked against its plan by
    /// [`CudaCode::kernels`]).
    pub fn read(bytes: &[u8]) -> std::result::Result<CudaCode, String> {
        use bincode::Options;
        let code: CudaCode =
            bin(bytes.len() as u64).deserialize(bytes).map_err(|e| format!("the CUDA section: {e}"))?;
        let arch = code.arch()?;
        for (i, m) in code.modules.iter().chain([&code.helpers]).enumerate() {
            let a = cubin_arch(&m.cubin).map_err(|e| format!("CUDA module {i}: {e}"))?;
            if a != arch {
                return Err(format!("CUDA module {i} is {a} code in a file for {arch}"));
            }
        }
        Ok(code)
    }

    /// The architecture the CUBINs are for.
    pub fn arch(&self) -> std::result::Result<Arch, String> {
        self.arch.parse()
    }

    /// The kernels and contraction calls of `plan`, made again from the plan and the stored
    /// recipes, after checking that the recipes stay inside the plan's buffers and that the
    /// stored modules hold exactly these kernels.
    pub(super) fn kernels(&self, plan: &Plan) -> std::result::Result<PlanKernels, String> {
        let lens = plan.buffer_lens();
        for (&i, r) in &self.recipes {
            let bad = |why: String| format!("the recipe of step {i}: {why}");
            let s = plan.steps.get(i).ok_or_else(|| bad("no such step".into()))?;
            let Work::Gemm(g) = &s.work else { return Err(bad("not a contraction".into())) };
            if super::blas::BlasPlan::new(g).is_ok() || s.srcs.len() != 2 {
                return Err(bad("the contraction needs no recipe".into()));
            }
            let mut len = [lens[s.srcs[0]], lens[s.srcs[1]]];
            for (o, k) in &r.copies {
                let src = *len.get(*o).ok_or_else(|| bad(format!("a copy of operand {o}")))?;
                check_kernel(k, k.out_len(), &[src]).map_err(|e| bad(format!("copy of operand {o}: {e}")))?;
                len[*o] = k.out_len().max(1);
            }
            let out = match &r.unpermute {
                Some((k, scratch)) => {
                    check_kernel(k, s.out_len, &[*scratch]).map_err(|e| bad(format!("unpermute: {e}")))?;
                    *scratch
                }
                None => s.out_len,
            };
            r.blas.check(len[0], len[1], out).map_err(bad)?;
        }
        let pk = plan_kernels(plan, &self.recipes).map_err(|e| e.to_string())?;
        let chunks: Vec<&[KernelSource]> = pk.sources.chunks(MODULE_KERNELS).collect();
        if self.helpers.kernels != [HELPERS.1] || self.helpers.source_crc32 != crc(HELPERS.0) {
            return Err("the helper module holds other kernels than this program's".into());
        }
        if chunks.len() != self.modules.len() {
            return Err(format!(
                "the plan has {} kernels, the file {} modules of them",
                pk.sources.len(),
                self.modules.len()
            ));
        }
        for (i, (c, m)) in chunks.iter().zip(&self.modules).enumerate() {
            let names: Vec<&str> = c.iter().map(|s| s.name.as_str()).collect();
            if names != m.kernels.iter().map(String::as_str).collect::<Vec<_>>()
                || crc(&module_source(c)) != m.source_crc32
            {
                return Err(format!("CUDA module {i} was compiled from other kernels than the plan's"));
            }
        }
        Ok(pk)
    }

    /// Each module's kernel names and the image a GPU loads; the helper module last.
    pub(super) fn images(&self, image: Image) -> Vec<(&[String], cudarc::nvrtc::Ptx)> {
        self.modules
            .iter()
            .chain([&self.helpers])
            .map(|m| {
                let img = match image {
                    Image::Cubin => cudarc::nvrtc::Ptx::from_binary(m.cubin.clone()),
                    Image::Ptx => cudarc::nvrtc::Ptx::from_src(m.ptx.clone()),
                };
                (m.kernels.as_slice(), img)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
