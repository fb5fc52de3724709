//! The CUDA section of an artifact without a GPU: architecture names and compatibility, a
//! compiled ViT block through NVRTC to CUBIN and PTX (when NVRTC is here), and the checks that
//! refuse a section that does not belong to its plan.
use luminal::prelude::Module as _;

use super::*;
use crate::backend::cuda::device::CudaLib;
use crate::backend::plan::Planner;
use crate::backend::Passes;
use crate::nn::{Block, ParamSet};
use crate::testing::{layer_problem, Differentiated, Rng};

#[test]
fn architectures_are_named_as_nvcc_names_them_and_run_where_cuda_runs_them() {
    let a = |s: &str| s.parse::<Arch>().unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(a("sm_90"), Arch { major: 9, minor: 0 });
    assert_eq!(a("sm_86"), Arch { major: 8, minor: 6 });
    assert_eq!(a("sm_120"), Arch { major: 12, minor: 0 });
    assert_eq!(a("compute_90"), a("sm_90"));
    assert_eq!(a("sm_100").to_string(), "sm_100");
    for bad in ["sm_9", "sm_90a", "90", "gfx90a", "sm_", "sm_99", "sm_x0"] {
        let e = bad.parse::<Arch>().expect_err(bad);
        assert!(e.contains(bad) || e.contains("sm_99"), "{bad}: {e}");
    }
    assert!("sm_90a".parse::<Arch>().unwrap_err().contains("suffix"));
    // CUDA's rules: CUBIN within a major version on a minor at least the file's; PTX on newer
    assert_eq!(image_for(a("sm_90"), a("sm_90")), Ok(Image::Cubin));
    assert_eq!(image_for(a("sm_80"), a("sm_86")), Ok(Image::Cubin));
    assert_eq!(image_for(a("sm_80"), a("sm_90")), Ok(Image::Ptx));
    assert_eq!(image_for(a("sm_90"), a("sm_120")), Ok(Image::Ptx));
    let e = image_for(a("sm_90"), a("sm_80")).unwrap_err();
    assert!(e.contains("sm_90") && e.contains("sm_80") && e.contains("--arch sm_80"), "{e}");
    assert!(image_for(a("sm_86"), a("sm_80")).is_err());
}

/// A ViT block's forward and backward (width 32, or 48 when `wide`), compiled, and its plan.
fn block_plan(wide: bool) -> (Box<Graph>, Plan) {
    let mut d = Differentiated::new(&|cx| {
        let mut rng = Rng::new(21);
        if wide {
            let b: Block<48, 2, 24, 144, 64, 64> = Block::new(cx, true, 1e-6);
            let x = cx.named_tensor::<luminal::shape::R3<2, 5, 48>>("x");
            let p = ParamSet::of(&b, cx);
            layer_problem(cx, &p, vec![(x.id, rng.uniform(2 * 5 * 48, 1.0))], b.forward(x), 0.5, &mut rng)
        } else {
            let b: Block<32, 2, 16, 96, 64, 64> = Block::new(cx, true, 1e-6);
            let x = cx.named_tensor::<luminal::shape::R3<2, 5, 32>>("x");
            let p = ParamSet::of(&b, cx);
            layer_problem(cx, &p, vec![(x.id, rng.uniform(2 * 5 * 32, 1.0))], b.forward(x), 0.5, &mut rng)
        }
    });
    d.cx.compile(<Passes>::default(), &mut d.handles);
    let plan = Planner::new(&d.cx).plan(&d.cx).expect("plan");
    (d.cx, plan)
}

fn nvrtc_or_skip(what: &str) -> bool {
    let here = CudaLib::Nvrtc.present();
    if !here {
        eprintln!("{what}: SKIPPED, NVRTC not found: {}", CudaLib::Nvrtc.missing());
    }
    here
}

#[test]
fn a_plan_compiles_to_cubin_and_ptx_that_belong_to_it() {
    if !nvrtc_or_skip("CUBIN of a ViT block") {
        return;
    }
    let (cx, plan) = block_plan(false);
    let sm90: Arch = "sm_90".parse().unwrap();
    let (bytes, report) = compile(&plan, &cx, sm90).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report:?}");
    let code = CudaCode::read(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code.arch(), Ok(sm90));
    let pk = code.kernels(&plan).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.kernels, pk.sources.len());
    assert!(pk.sources.len() > MODULE_KERNELS, "several modules: {} kernels", pk.sources.len());
    assert_eq!(code.modules.len(), pk.sources.len().div_ceil(MODULE_KERNELS));
    for m in &code.modules {
        assert_eq!(cubin_arch(&m.cubin), Ok(sm90));
        assert!(m.ptx.contains(".target sm_90"), "PTX for sm_90");
        for k in &m.kernels {
            assert!(m.ptx.contains(&format!(".entry {k}(")), "{k} missing from the PTX");
            // the function's symbol is in the CUBIN's string table
            let sym = format!("\0{k}\0");
            assert!(m.cubin.windows(sym.len()).any(|w| w == sym.as_bytes()), "{k} missing from the CUBIN");
        }
    }
    // the same plan for another architecture: its ELF header says so
    let sm80: Arch = "sm_80".parse().unwrap();
    let (b80, _) = compile(&plan, &cx, sm80).unwrap_or_else(|e| panic!("{e}"));
    let mut c80 = CudaCode::read(&b80).unwrap();
    assert_eq!(cubin_arch(&c80.modules[0].cubin), Ok(sm80));
    // a module of another architecture in the file is refused, naming both
    c80.arch = "sm_90".into();
    let mixed = bincode_of(&c80);
    let e = CudaCode::read(&mixed).err().expect("mixed architectures");
    assert!(e.contains("sm_80 code in a file for sm_90"), "{e}");

    // another plan (wider block): the modules hold other kernels
    let (_, other) = block_plan(true);
    let e = code.kernels(&other).err().expect("another plan");
    assert!(e.contains("other kernels") || e.contains("modules"), "{e}");
    // a kernel renamed, or a module's source checksum altered
    let mut code = CudaCode::read(&bytes).unwrap();
    code.modules[1].kernels.swap(0, 1);
    assert!(code.kernels(&plan).err().expect("renamed").contains("module 1"));
    let mut code = CudaCode::read(&bytes).unwrap();
    code.modules[0].source_crc32 ^= 1;
    assert!(code.kernels(&plan).err().expect("other source").contains("module 0"));
    // the helper module (the pointer kernel of gathered products) is checked too
    assert_eq!(cubin_arch(&code.helpers.cubin), Ok(sm90));
    assert!(code.helpers.ptx.contains(".entry dino_fill_ptrs("));
    let mut code = CudaCode::read(&bytes).unwrap();
    code.helpers.source_crc32 ^= 1;
    assert!(code.kernels(&plan).err().expect("other helpers").contains("helper module"));
    // a recipe for a step that is no contraction, or needs none
    let mut code = CudaCode::read(&bytes).unwrap();
    let gemm = plan.steps.iter().position(|s| matches!(s.work, Work::Gemm(_))).expect("a product");
    let recipe = || {
        let Work::Gemm(g) = &plan.steps[gemm].work else { unreachable!() };
        GemmRecipe { copies: vec![], blas: super::super::blas::BlasPlan::new(g).unwrap(), unpermute: None }
    };
    code.recipes.insert(gemm, recipe());
    assert!(code.kernels(&plan).err().expect("needless recipe").contains("needs no recipe"));
    code.recipes.clear();
    code.recipes.insert(0, recipe());
    assert!(code.kernels(&plan).err().expect("recipe of an input").contains("not a contraction"));
    // not a section at all
    assert!(CudaCode::read(&bytes[..bytes.len() / 2]).is_err());
    assert!(cubin_arch(b"\x7fELF").is_err());
}

fn bincode_of(code: &CudaCode) -> Vec<u8> {
    use bincode::Options;
    bin(u64::MAX).serialize(code).unwrap()
}
