//! Finite-difference checks of every rule of the table and of every kind of view.
//!
//! Each case builds `loss = sum(f(vars) * r)` for a fixed random `r` and compares the
//! analytic gradient of every var with central differences (eps 1e-2). Tolerance per element:
//! `|numeric - analytic| <= 2e-3 + 2e-2 * |analytic|`, f32 differences on O(1) values.
//! Each case also runs compiled by the CPU backend and must match the uncompiled graph to
//! 1e-5 relative.
use crate::graph::dims;
use luminal::prelude::*;

use crate::graph::ops::sum_all;
use crate::graph::View;
use crate::testing::{check_gradients, Problem, Rng};

/// `sum(y * r)` for a fresh random input `r` shaped like `y`; returns the loss id and r.
fn dot_random<S: Shape>(cx: &mut Graph, y: GraphTensor<S>, rng: &mut Rng) -> (NodeIndex, (NodeIndex, Vec<f32>)) {
    let r = cx.named_tensor::<S>("r");
    let n: usize = y.shape.shape().iter().map(|d| d.to_usize().expect("static test shape")).product();
    let prod = y * r;
    let loss = sum_all(cx, View { id: prod.id, st: prod.shape });
    (loss.id, (r.id, rng.uniform(n, 1.0)))
}

fn check(name: &str, build: &dyn Fn(&mut Graph) -> Problem) {
    check_gradients(name, build, 2e-3, 2e-2);
}

macro_rules! case {
    ($name:ident, $seed:expr, |$cx:ident, $rng:ident| $body:block) => {
        #[test]
        fn $name() {
            check(stringify!($name), &|$cx: &mut Graph| {
                let mut $rng = Rng::new($seed);
                let $rng = &mut $rng;
                $body
            });
        }
    };
}

fn span(a: usize, b: usize) -> std::ops::Range<luminal::prelude::symbolic::Expression> {
    a.into()..b.into()
}

fn var<S: Shape>(cx: &mut Graph, name: &str) -> GraphTensor<S> {
    cx.named_tensor::<S>(name)
}

fn finish<S: Shape>(cx: &mut Graph, y: GraphTensor<S>, vars: Vec<(NodeIndex, Vec<f32>)>, rng: &mut Rng) -> Problem {
    let (loss, r) = dot_random(cx, y, rng);
    Problem { loss, vars, inputs: vec![r] }
}

// ---- unary rules, on views (unary ops map the physical buffer) ----------------------------
case!(log2_of_permuted, 1, |cx, rng| {
    let x = var::<R2<2, 3>>(cx, "x");
    let y = x.permute::<R2<3, 2>, _>().log2();
    let xv = rng.range(6, 0.5, 2.0);
    finish(cx, y, vec![(x.id, xv)], rng)
});
case!(exp2_of_sliced, 2, |cx, rng| {
    let x = var::<R1<5>>(cx, "x");
    let y = x.slice((span(1, 4),)).realize::<R1<3>>().exp2();
    let xv = rng.uniform(5, 1.0);
    finish(cx, y, vec![(x.id, xv)], rng)
});
case!(sin_of_expanded, 3, |cx, rng| {
    let x = var::<R1<3>>(cx, "x");
    let y = x.expand::<R2<2, 3>, _>().sin();
    let xv = rng.uniform(3, 2.0);
    finish(cx, y, vec![(x.id, xv)], rng)
});
case!(sqrt_and_recip, 4, |cx, rng| {
    let x = var::<R2<2, 2>>(cx, "x");
    let y = x.sqrt() + x.permute::<_, Axes2<1, 0>>().recip();
    let xv = rng.range(4, 0.5, 2.0);
    finish(cx, y, vec![(x.id, xv)], rng)
});

// ---- binary rules ---------------------------------------------------------------------------
case!(add_with_broadcast, 5, |cx, rng| {
    let a = var::<R2<2, 3>>(cx, "a");
    let b = var::<R1<3>>(cx, "b");
    let y = a + b.expand::<R2<2, 3>, _>();
    let (av, bv) = (rng.uniform(6, 1.0), rng.uniform(3, 1.0));
    finish(cx, y, vec![(a.id, av), (b.id, bv)], rng)
});
case!(mul_with_broadcast_both, 6, |cx, rng| {
    let a = var::<R1<2>>(cx, "a");
    let b = var::<R1<3>>(cx, "b");
    let y = a.expand::<R2<2, 3>, Axis<1>>() * b.expand::<R2<2, 3>, Axis<0>>();
    let (av, bv) = (rng.uniform(2, 1.0), rng.uniform(3, 1.0));
    finish(cx, y, vec![(a.id, av), (b.id, bv)], rng)
});
case!(mod_both_inputs, 7, |cx, rng| {
    let a = var::<R1<6>>(cx, "a");
    let b = var::<R1<6>>(cx, "b");
    let y = a % b;
    // a = b * k + f * b with f in [0.2, 0.8): away from the discontinuities of fmod
    let bv = rng.range(6, 1.0, 2.0);
    let k = [-2.0f32, -1.0, 0.0, 1.0, 2.0, 3.0];
    let f = rng.range(6, 0.2, 0.8);
    let av: Vec<f32> = (0..6).map(|i| bv[i] * (k[i] + if k[i] < 0.0 { -f[i] } else { f[i] })).collect();
    finish(cx, y, vec![(a.id, av), (b.id, bv)], rng)
});
case!(less_than_masks_without_gradient, 8, |cx, rng| {
    let x = var::<R1<6>>(cx, "x");
    let c = cx.constant(0.0).expand::<R1<6>, _>();
    let y = x * x.less_than(c);
    let xv = vec![-1.0, -0.5, -0.2, 0.3, 0.7, 1.5];
    let _ = rng;
    finish(cx, y, vec![(x.id, xv)], rng)
});

// ---- reductions -----------------------------------------------------------------------------
case!(sum_reduce_each_axis, 9, |cx, rng| {
    let x = var::<R2<3, 4>>(cx, "x");
    let s0 = x.sum_reduce::<R1<4>, Axis<0>>();
    let s1 = x.sum_reduce::<R1<3>, Axis<1>>();
    let y = s0.expand::<R2<3, 4>, Axis<0>>() * s1.expand::<R2<3, 4>, Axis<1>>();
    let xv = rng.uniform(12, 1.0);
    finish(cx, y, vec![(x.id, xv)], rng)
});
case!(max_reduce_distinct, 10, |cx, rng| {
    let x = var::<R2<3, 4>>(cx, "x");
    let y = x.max_reduce::<R1<3>, Axis<1>>();
    let xv: Vec<f32> = (0..12).map(|i| ((i * 7) % 12) as f32 * 0.3 - 1.0).collect();
    finish(cx, y, vec![(x.id, xv)], rng)
});

// ---- views ----------------------------------------------------------------------------------
case!(contiguous_of_permuted, 11, |cx, rng| {
    let x = var::<R3<2, 3, 4>>(cx, "x");
    let y = x.permute::<R3<4, 2, 3>, Axes3<2, 0, 1>>().contiguous();
    let xv = rng.uniform(24, 1.0);
    finish(cx, y, vec![(x.id, xv)], rng)
});
case!(pad_front_and_back, 12, |cx, rng| {
    let x = var::<R2<2, 3>>(cx, "x");
    let y = x.pad::<R2<2, 6>, usize, usize>(&[(0, 0), (1, 2)]).exp2();
    let xv = rng.uniform(6, 1.0);
    finish(cx, y, vec![(x.id, xv)], rng)
});
case!(interior_slice, 13, |cx, rng| {
    let x = var::<R2<4, 5>>(cx, "x");
    let y = x.slice((span(1, 3), span(1, 4))).contiguous().realize::<R2<2, 3>>() * 3.0;
    let xv = rng.uniform(20, 1.0);
    finish(cx, y, vec![(x.id, xv)], rng)
});
case!(reshape_after_permute, 14, |cx, rng| {
    let x = var::<R2<2, 6>>(cx, "x");
    let y = x.permute::<R2<6, 2>, _>().reshape::<R2<3, 4>>().sin();
    let xv = rng.uniform(12, 1.0);
    finish(cx, y, vec![(x.id, xv)], rng)
});
case!(concat_along_last, 15, |cx, rng| {
    let a = var::<R2<2, 3>>(cx, "a");
    let b = var::<R2<2, 2>>(cx, "b");
    let y = a.concat_along::<R2<2, 5>, Axis<1>, _>(b).exp2();
    let (av, bv) = (rng.uniform(6, 1.0), rng.uniform(4, 1.0));
    finish(cx, y, vec![(a.id, av), (b.id, bv)], rng)
});
case!(shared_input_paths_accumulate, 16, |cx, rng| {
    let x = var::<R2<2, 3>>(cx, "x");
    let y = x * x + x.sin() * x.permute::<R2<3, 2>, _>().permute::<R2<2, 3>, _>();
    let xv = rng.uniform(6, 1.0);
    finish(cx, y, vec![(x.id, xv)], rng)
});
case!(matmul_3d_times_2d, 17, |cx, rng| {
    let x = var::<R3<2, 3, 4>>(cx, "x");
    let w = var::<R2<4, 5>>(cx, "w");
    let y = x.matmul(w);
    let (xv, wv) = (rng.uniform(24, 1.0), rng.uniform(20, 1.0));
    finish(cx, y, vec![(x.id, xv), (w.id, wv)], rng)
});
case!(batched_4d_matmul, 18, |cx, rng| {
    let a = var::<R4<2, 2, 3, 4>>(cx, "a");
    let b = var::<R4<2, 2, 4, 3>>(cx, "b");
    let y = a.matmul(b);
    let (av, bv) = (rng.uniform(48, 1.0), rng.uniform(48, 1.0));
    finish(cx, y, vec![(a.id, av), (b.id, bv)], rng)
});

/// One graph with a dynamic batch dim, run at two batch sizes.
#[test]
fn dynamic_batch_dim() {
    for batch in [2usize, 5] {
        check("dynamic_batch_dim", &|cx: &mut Graph| {
            let mut rng = Rng::new(19);
            let x = cx.named_tensor::<(dims::Batch, Const<3>)>("x");
            let w = cx.named_tensor::<R2<3, 4>>("w");
            let r = cx.named_tensor::<(dims::Batch, Const<4>)>("r");
            cx.set_dyn_dim(dims::BATCH, batch);
            let y = (x.matmul(w) * r).sin();
            let loss = sum_all(cx, View { id: y.id, st: y.shape });
            Problem {
                loss: loss.id,
                vars: vec![(x.id, rng.uniform(batch * 3, 1.0)), (w.id, rng.uniform(12, 1.0))],
                inputs: vec![(r.id, rng.uniform(batch * 4, 1.0))],
            }
        });
    }
}
