//! A pre-norm ViT block built from dino-runtime layers equals timm's `Block` (DINO settings:
//! qkv bias, LayerNorm eps 1e-6, exact GELU): forward output and the gradient of every
//! parameter and of the input, for `loss = sum(block(x) * r)`, against a float64 PyTorch
//! reference (`tests/fixtures/vit_block.safetensors`).
//!
//! Tolerance: `|ours - torch| <= 1e-4 + 1e-4 * |torch|` per element, uncompiled (luminal's
//! interpreter) and compiled by the CPU backend.
mod common;

use common::{assert_close, fixture, max_abs_err, tensor};
use dino::device::test_executor;
use dino::runtime::autograd::backward;
use dino::runtime::backend::Passes;
use dino::runtime::graph::{data, ops::sum_all, Handles, View};
use dino::runtime::nn::{Block, ParamSet};
use luminal::prelude::*;

type TestBlock = Block<48, 3, 16, 144, 192, 192>;

fn run(compiled: bool) {
    let f = fixture("vit_block");
    let mut cx = Box::new(Graph::new());
    let block = TestBlock::new(&mut cx, true, 1e-6);
    let x = cx.named_tensor::<R3<2, 9, 48>>("x");
    let r = cx.named_tensor::<R3<2, 9, 48>>("r");
    let y = block.forward(x);
    let params = ParamSet::of(&block, &mut cx);
    let prod = y * r;
    let loss = sum_all(&mut cx, View { id: prod.id, st: prod.shape });
    let mut wrt = params.ids();
    wrt.push(x.id);
    let grads = backward(&mut cx, loss.id, &wrt).expect("backward");
    let yc = y.contiguous();
    let mut handles = Handles(vec![yc.id]);
    handles.0.extend(grads.iter().map(|g| g.id));
    for id in &handles.0 {
        cx.no_delete.insert(*id);
    }
    for p in &params.params {
        let t = tensor(&f, &format!("param.{}", p.name));
        assert_eq!(t.shape, p.shape, "{} has the PyTorch shape", p.name);
        params.set(&mut cx, &p.name, t.data.clone()).unwrap();
    }
    data::set(&mut cx, x.id, tensor(&f, "x").data.clone());
    data::set(&mut cx, r.id, tensor(&f, "r").data.clone());
    if compiled {
        cx.compile(Passes::default(), &mut handles);
        let mut rt = test_executor(&cx);
        rt.execute_to_host(&mut cx).expect("run");
    } else {
        cx.execute();
    }
    let tag = if compiled { "compiled" } else { "uncompiled" };
    let out = data::get(&cx, handles.0[0]).unwrap();
    println!("{tag} y: max abs error {:.2e}", max_abs_err(out, &tensor(&f, "y").data));
    assert_close(&format!("{tag} y"), out, &tensor(&f, "y").data, 1e-4, 1e-4);
    let names = params.params.iter().map(|p| p.name.clone()).chain(["x".to_string()]);
    for (name, id) in names.zip(&handles.0[1..]) {
        let got = data::get(&cx, *id).unwrap();
        let want = &tensor(&f, &format!("grad.{name}")).data;
        println!("{tag} grad {name}: max abs error {:.2e}", max_abs_err(got, want));
        assert_close(&format!("{tag} grad {name}"), got, want, 1e-4, 1e-4);
    }
}

#[test]
fn block_matches_timm_uncompiled() {
    run(false);
}

#[test]
fn block_matches_timm_compiled_cpu() {
    run(true);
}
