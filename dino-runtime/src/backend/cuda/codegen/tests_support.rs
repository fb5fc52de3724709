//! Kernels for the codegen tests (host C and GPU).
use luminal::prelude::*;

use crate::backend::fused::FusedOp;
use crate::backend::layout::Layout;
use crate::backend::plan::FusedKernel;
use crate::backend::Passes;
use crate::nn::{Block, ParamSet};
use crate::testing::{layer_problem, Differentiated, Rng};

/// Every fused kernel of a ViT block's forward and backward, bound to its input layouts,
/// with the length each input buffer must have (its view's extent).
pub(crate) fn block_kernels() -> Vec<(FusedKernel, Vec<usize>)> {
    let d = Differentiated::new(&|cx| {
        let mut rng = Rng::new(3);
        let b: Block<8, 2, 4, 24, 16, 16> = Block::new(cx, true, 1e-6);
        let x = cx.named_tensor::<luminal::shape::R3<2, 5, 8>>("x");
        let y = b.forward(x);
        let p = ParamSet::of(&b, cx);
        layer_problem(cx, &p, vec![(x.id, rng.uniform(80, 1.0))], y, 0.5, &mut rng)
    });
    let mut d = d;
    d.cx.compile(<Passes>::default(), &mut d.handles);
    let cx = &d.cx;
    let map = Default::default();
    let mut out = vec![];
    for n in cx.graph.node_indices() {
        let Some(op) = cx.graph.node_weight(n).and_then(|w| w.as_any().downcast_ref::<FusedOp>()) else { continue };
        let layouts: Vec<Layout> =
            cx.get_sources(n).iter().map(|(_, _, st)| Layout::of(st, &map).expect("static")).collect();
        let dims = op.resolve_dims(&map).expect("static dims");
        let extents = layouts.iter().map(|l| l.extent().max(1)).collect();
        out.push((FusedKernel::new(op, &dims, &layouts), extents));
    }
    out
}
