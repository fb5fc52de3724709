//! What `timm_parity.rs` runs each backbone through: the fixture's weights set by timm key, the
//! forward compiled and run on the CPU backend, each output against the fixture.
use dino::device::test_executor;
use dino::runtime::backend::Passes;
use dino::runtime::graph::{data, Handles};
use dino::runtime::model::VitModel;
use dino::runtime::nn::ParamSet;
use luminal::prelude::*;

use super::common::{assert_close, fixture, max_abs_err, splitmix, tensor};

/// Run `forward` of `M` with the fixture's splitmix weights through the CPU backend and compare
/// its four outputs with the fixture's within 1e-4.
pub fn check<M: VitModel>(fixture_name: &str, forward: impl Fn(&M, &mut Graph) -> [(NodeIndex, &'static str); 4]) {
    let f = fixture(fixture_name);
    let seed: u64 = f.metadata["seed"].parse().unwrap();
    let mut cx = Box::new(Graph::new());
    let model = M::new(&mut cx);
    let outs = forward(&model, &mut cx);
    let params = ParamSet::of(&model, &mut cx);
    for (name, values) in splitmix::params(seed, &f.metadata["keys"]) {
        params.set(&mut cx, &name, values).unwrap_or_else(|e| panic!("timm key {name}: {e}"));
    }
    let mut handles = Handles(outs.iter().map(|o| o.0).collect());
    for id in &handles.0 {
        cx.no_delete.insert(*id);
    }
    cx.compile(Passes::default(), &mut handles);
    let mut rt = test_executor(&cx);
    rt.execute_to_host(&mut cx).unwrap();
    for ((_, what), id) in outs.iter().zip(&handles.0) {
        let got = data::get(&cx, *id).unwrap();
        let want = &tensor(&f, what).data;
        println!("{fixture_name} {what}: max abs error {:.2e}", max_abs_err(got, want));
        assert_close(&format!("{fixture_name} {what}"), got, want, 1e-4, 0.0);
    }
}

/// timm's parameter count: the sum of the fixture's `name:numel` keys.
pub fn timm_params(fixture_name: &str) -> usize {
    let f = fixture(fixture_name);
    f.metadata["keys"].split(',').map(|kv| kv.rsplit(':').next().unwrap().parse::<usize>().unwrap()).sum()
}

/// Images of the fixture: splitmix stream `seed + size`, offset 0.
pub fn image<const B: usize, const S: usize>(cx: &mut Graph, seed: u64) -> GraphTensor<R4<B, 3, S, S>> {
    let x = cx.named_tensor::<R4<B, 3, S, S>>(&format!("image{S}"));
    data::set(cx, x.id, splitmix::uniform(seed + S as u64, 0, B * 3 * S * S));
    cx.no_delete.insert(x.id);
    x
}

/// The [CLS] rows of attention weights `(B, H, N, N)`: `(B, H, N)`.
pub fn cls_rows<const H: usize, const N: usize>(a: GraphTensor<R4<2, H, N, N>>) -> GraphTensor<R3<2, H, N>> {
    a.slice((.., .., ..luminal::prelude::symbolic::Expression::from(1), ..))
        .contiguous()
        .realize::<R4<2, H, 1, N>>()
        .reshape::<R3<2, H, N>>()
}
