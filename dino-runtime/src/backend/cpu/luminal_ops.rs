//! luminal's own executor (`Graph::execute`) runs our pass nodes through `Operator::process`:
//! on the CPU, with the CPU kernels. Used by tests that compare the compiled graph with the
//! uncompiled one, and by luminal's executor where a caller prefers it.
use luminal::op::{InputTensor, Operator};
use luminal::prelude::*;

use crate::backend::fused::FusedOp;
use crate::backend::gemm::GemmOp;
use crate::backend::layout::Layout;
use crate::backend::plan::{FusedKernel, GemmPlan};

impl Operator for FusedOp {
    fn process(&mut self, inp: Vec<(InputTensor, ShapeTracker)>) -> Vec<Tensor> {
        // luminal's executor has already substituted the dynamic dims into the trackers.
        let dyn_map = unsafe { self.dyn_map.as_ref().expect("graph outlives its ops") };
        let dims = self.resolve_dims(dyn_map).expect("dims resolvable at execution");
        let layouts: Vec<Layout> = inp.iter().map(|(_, st)| Layout::of(st, dyn_map).expect("resolved view")).collect();
        let bufs: Vec<&[f32]> = inp
            .iter()
            .map(|(t, _)| t.borrowed().data.as_any().downcast_ref::<Vec<f32>>().expect("f32 buffer").as_slice())
            .collect();
        let kernel = FusedKernel::new(self, &dims, &layouts);
        let mut out = vec![0f32; kernel.out_len()];
        kernel.run(&bufs, &mut out);
        vec![Tensor::new(out)]
    }
}

impl Operator for GemmOp {
    fn process(&mut self, inp: Vec<(InputTensor, ShapeTracker)>) -> Vec<Tensor> {
        let map = Default::default(); // trackers arrive resolved
        let la = Layout::of(&inp[0].1, &map).expect("resolved view");
        let lb = Layout::of(&inp[1].1, &map).expect("resolved view");
        let buf =
            |i: usize| inp[i].0.borrowed().data.as_any().downcast_ref::<Vec<f32>>().expect("f32 buffer").as_slice();
        let plan = GemmPlan::new(&self.axes, &la, &lb);
        let mut out = vec![0f32; plan.out_len()];
        plan.run(buf(0), buf(1), &mut out);
        vec![Tensor::new(out)]
    }
}
