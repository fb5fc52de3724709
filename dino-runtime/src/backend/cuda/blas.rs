//! Contractions as cuBLAS calls: a [`GemmPlan`] (row-major thinking, any strides) turned into
//! column-major `cublasSgemmStridedBatched` calls.
//!
//! cuBLAS multiplies column-major matrices whose elements along one axis are adjacent: an
//! operand `X` (rows × cols) is either `N` (element `(r, c)` at `r + c·ld`) or `T` (at
//! `c + r·ld`), with `ld` at least the length of the adjacent axis. Our product is
//! `out[i, j] = Σ_t a[i, t] · b[t, j]` with the output contiguous over the non-K axes. When
//! the N axis is the output's innermost we compute `outᵀ = bᵀ · aᵀ` (rows `j`, columns `i`),
//! otherwise `out = a · b`; each operand then takes `N` or `T` from which of its two strides
//! is 1. A length-1 axis has no stride to speak of and adapts to either. One batch axis
//! becomes the call's batch (any stride, 0 included); further batch axes become separate calls;
//! K axes that could not be merged become extra calls accumulating with `beta = 1`. An operand
//! with no unit stride on its two axes (an overlapping or gathered view) cannot be expressed:
//! the runtime copies it to a contiguous buffer first ([`BlasPlan::new`] says which).
use crate::backend::plan::contraction::{point_offsets, Ax};
use crate::backend::plan::GemmPlan;

/// cuBLAS's transpose flag for one operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Trans {
    N,
    T,
}

/// Which of the contraction's inputs a cuBLAS operand reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Operand {
    A,
    B,
}

/// One `cublasSgemmStridedBatched` call, in cuBLAS's column-major terms:
/// `C[.., r, c] = alpha · Σ_t op(X)[r, t] · op(Y)[t, c] + beta · C[.., r, c]`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlasCall {
    pub x: Operand,
    pub y: Operand,
    pub trans_x: Trans,
    pub trans_y: Trans,
    pub rows: i32,
    pub cols: i32,
    pub k: i32,
    pub ld_x: i32,
    pub ld_y: i32,
    pub ld_c: i32,
    /// Element offsets of the first matrix of X, Y and C in their buffers.
    pub off_x: i64,
    pub off_y: i64,
    pub off_c: i64,
    pub batch: i32,
    pub stride_x: i64,
    pub stride_y: i64,
    pub stride_c: i64,
    /// 0 for the first K point, 1 for those accumulated after it.
    pub beta: f32,
}

/// Why a product cannot be one cuBLAS call as its operands are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedsCopy {
    /// This input has no unit stride on either of its matrix axes.
    Input(Operand),
    /// The output is not contiguous along either matrix axis (cannot happen for our outputs,
    /// which are contiguous over the non-K axes, unless both M and N are loops).
    Output,
}

/// The cuBLAS calls of one contraction, in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlasPlan {
    pub calls: Vec<BlasCall>,
    /// The output has no K to sum over (an empty K): fill it with zeros instead.
    pub zero_fill: bool,
}

/// One operand's matrix: strides along its row and column axes (cuBLAS orientation).
fn orient(len_r: usize, s_r: isize, len_c: usize, s_c: isize) -> Option<(Trans, i32)> {
    // N: rows adjacent (s_r == 1), ld = s_c >= len_r.  T: columns adjacent, ld = s_r >= len_c.
    let n_ok = (s_r == 1 || len_r <= 1) && (len_c <= 1 || s_c >= len_r.max(1) as isize);
    let t_ok = (s_c == 1 || len_c <= 1) && (len_r <= 1 || s_r >= len_c.max(1) as isize);
    if n_ok {
        Some((Trans::N, if len_c <= 1 { len_r.max(1) as i32 } else { s_c as i32 }))
    } else if t_ok {
        Some((Trans::T, if len_r <= 1 { len_c.max(1) as i32 } else { s_r as i32 }))
    } else {
        None
    }
}

impl BlasPlan {
    /// Plan `plan` as cuBLAS calls, or say which operand must be made contiguous first.
    pub fn new(plan: &GemmPlan) -> Result<BlasPlan, NeedsCopy> {
        let (m, n, k) = (plan.m, plan.n, plan.k);
        let k_points: usize = plan.k_loops.iter().map(|a| a.len).product();
        if plan.out_len() == 0 {
            return Ok(BlasPlan { calls: vec![], zero_fill: false });
        }
        if k.len == 0 || k_points == 0 {
            return Ok(BlasPlan { calls: vec![], zero_fill: true });
        }
        // C's rows are the output's adjacent axis.
        let transposed = n.sc == 1 || n.len <= 1 && m.sc != 1;
        let (r, c, ld_c) = if transposed {
            if m.len > 1 && m.sc < n.len as isize {
                return Err(NeedsCopy::Output);
            }
            (n, m, if m.len <= 1 { n.len.max(1) as isize } else { m.sc })
        } else {
            if m.sc != 1 && m.len > 1 {
                return Err(NeedsCopy::Output);
            }
            (m, n, if n.len <= 1 { m.len.max(1) as isize } else { n.sc })
        };
        // X is rows x k, Y is k x cols; in the transposed product X reads B and Y reads A.
        let (x, y) = if transposed { (Operand::B, Operand::A) } else { (Operand::A, Operand::B) };
        let stride = |o: Operand, a: &Ax| if o == Operand::A { a.sa } else { a.sb };
        let (trans_x, ld_x) = orient(r.len, stride(x, &r), k.len, stride(x, &k)).ok_or(NeedsCopy::Input(x))?;
        let (trans_y, ld_y) = orient(k.len, stride(y, &k), c.len, stride(y, &c)).ok_or(NeedsCopy::Input(y))?;
        let base = |o: Operand| if o == Operand::A { plan.base.0 } else { plan.base.1 } as i64;

        // the longest loop is the call's batch (any loop can be: each has one stride per
        // operand); the others and the K points are calls. Attention's products loop over
        // images and heads: batching the images (640) rather than the heads (6) is 6 calls
        // instead of 640.
        let longest = (0..plan.loops.len()).rev().max_by_key(|&i| plan.loops[i].len);
        let (batch_ax, outer) = match longest {
            Some(i) => {
                let mut rest = plan.loops.clone();
                (rest.remove(i), rest)
            }
            None => (Ax { len: 1, sa: 0, sb: 0, sc: 0 }, vec![]),
        };
        let n_outer: usize = outer.iter().map(|a| a.len).product();
        let mut calls = Vec::with_capacity(n_outer * k_points);
        for o in 0..n_outer {
            let (oa, ob, oc) = point_offsets(&outer, o);
            for kp in 0..k_points {
                let (ka, kb, _) = point_offsets(&plan.k_loops, kp);
                let off = |op: Operand| base(op) + if op == Operand::A { oa + ka } else { ob + kb } as i64;
                calls.push(BlasCall {
                    x,
                    y,
                    trans_x,
                    trans_y,
                    rows: r.len as i32,
                    cols: c.len as i32,
                    k: k.len as i32,
                    ld_x,
                    ld_y,
                    ld_c: ld_c as i32,
                    off_x: off(x),
                    off_y: off(y),
                    off_c: oc as i64,
                    batch: batch_ax.len as i32,
                    stride_x: stride(x, &batch_ax) as i64,
                    stride_y: stride(y, &batch_ax) as i64,
                    stride_c: batch_ax.sc as i64,
                    beta: if kp == 0 { 0.0 } else { 1.0 },
                });
            }
        }
        Ok(BlasPlan { calls, zero_fill: false })
    }

    /// The calls as one pointer-array batched call (`cublasSgemmBatched`), when there are
    /// several and they are independent (one K point, same matrix shapes): the element
    /// offsets `[x, y, c]` of every matrix of every call, in order. Attention's products loop
    /// over images and heads whose strides do not combine into one: 6 strided calls become
    /// one of 768 matrices.
    pub fn gathered(&self) -> Option<Vec<[i64; 3]>> {
        let c0 = self.calls.first()?;
        let shape = |c: &BlasCall| (c.x, c.y, c.trans_x, c.trans_y, c.rows, c.cols, c.k, c.ld_x, c.ld_y, c.ld_c);
        if self.calls.len() < 2 || self.calls.iter().any(|c| c.beta != 0.0 || shape(c) != shape(c0)) {
            return None;
        }
        Some(
            self.calls
                .iter()
                .flat_map(|c| {
                    (0..c.batch as i64)
                        .map(move |i| [c.off_x + i * c.stride_x, c.off_y + i * c.stride_y, c.off_c + i * c.stride_c])
                })
                .collect(),
        )
    }
}

impl BlasPlan {
    /// Every element each call reads or writes lies inside buffers of `a_len` (A), `b_len`
    /// (B) and `c_len` (the output) elements, and every size is one cuBLAS accepts: what a
    /// plan read from a file must show before its calls run.
    pub fn check(&self, a_len: usize, b_len: usize, c_len: usize) -> Result<(), String> {
        // the last element a strided batch of matrices touches, from its first at `off`
        let last = |off: i64, batch: i32, stride: i64, rows: i32, cols: i32, ld: i32| -> i128 {
            let (b, r, c) = (batch as i128 - 1, rows as i128 - 1, cols as i128 - 1);
            off as i128 + b * stride as i128 + r + c * ld as i128
        };
        for (i, c) in self.calls.iter().enumerate() {
            let bad = |why: String| format!("cuBLAS call {i}: {why}");
            if c.rows < 0 || c.cols < 0 || c.k < 0 || c.batch < 1 || c.ld_c < c.rows.max(1) {
                return Err(bad(format!("sizes {}x{}x{} batch {}, ld_c {}", c.rows, c.cols, c.k, c.batch, c.ld_c)));
            }
            if c.rows == 0 || c.cols == 0 {
                continue;
            }
            if [c.off_x, c.off_y, c.off_c, c.stride_x, c.stride_y, c.stride_c].iter().any(|v| *v < 0) {
                return Err(bad("a negative offset or stride".into()));
            }
            let len = |o: Operand| if o == Operand::A { a_len } else { b_len } as i128;
            // X is rows x k, Y is k x cols, as stored: N keeps the orientation, T swaps it
            let (xr, xc) = if c.trans_x == Trans::N { (c.rows, c.k) } else { (c.k, c.rows) };
            let (yr, yc) = if c.trans_y == Trans::N { (c.k, c.cols) } else { (c.cols, c.k) };
            if c.ld_x < xr.max(1) || c.ld_y < yr.max(1) {
                return Err(bad(format!("leading dimensions {} and {} too small", c.ld_x, c.ld_y)));
            }
            let reads = [
                ("X", c.k > 0, last(c.off_x, c.batch, c.stride_x, xr, xc, c.ld_x), len(c.x)),
                ("Y", c.k > 0, last(c.off_y, c.batch, c.stride_y, yr, yc, c.ld_y), len(c.y)),
                ("C", true, last(c.off_c, c.batch, c.stride_c, c.rows, c.cols, c.ld_c), c_len as i128),
            ];
            for (what, used, end, len) in reads {
                if used && end >= len {
                    return Err(bad(format!("{what} reaches element {end} of a {len}-element buffer")));
                }
            }
        }
        Ok(())
    }
}

/// The runtime's way around [`NeedsCopy::Input`]: copy both operands to canonical layouts —
/// batch axes, then A's M and K (B's K and N) axes, the last adjacent — so that every role
/// group merges and each matrix has a unit stride. Returns, per operand, the copy kernel and
/// the copy's layout in the product's axis order; plan the product again on those layouts.
/// Broadcast axes stay broadcast (not materialized).
pub fn canonical_copies(
    axes: &[crate::backend::gemm::GemmAxis],
    la: &crate::backend::layout::Layout,
    lb: &crate::backend::layout::Layout,
) -> [(crate::backend::plan::FusedKernel, crate::backend::layout::Layout); 2] {
    use crate::backend::gemm::GemmAxis::{Batch, K, M, N};
    use crate::backend::layout::{Axis, Layout};
    let one = |l: &Layout, order: [crate::backend::gemm::GemmAxis; 3]| {
        let rank = axes.len();
        let mine: Vec<usize> = order
            .iter()
            .flat_map(|r| (0..rank).filter(move |&i| axes[i] == *r))
            .filter(|&i| l.axes[i].stride != 0 || l.axes[i].len == 1)
            .collect();
        let kernel = crate::backend::plan::FusedKernel::copy(l, &mine);
        let mut strides = vec![0isize; rank];
        let mut acc = 1isize;
        for &i in mine.iter().rev() {
            strides[i] = acc;
            acc *= l.axes[i].len as isize;
        }
        let axes =
            (0..rank).map(|i| Axis { len: l.axes[i].len, stride: strides[i], lo: 0, hi: l.axes[i].len }).collect();
        (kernel, Layout { axes, offset: 0 })
    };
    [one(la, [Batch, M, K]), one(lb, [Batch, K, N])]
}

/// Everything the runtime runs for one contraction on cuBLAS.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct GemmRecipe {
    /// Copies of inputs to canonical layouts first (operand 0 = A, 1 = B).
    pub copies: Vec<(usize, crate::backend::plan::FusedKernel)>,
    /// The cuBLAS calls, reading the (copied) inputs.
    pub blas: BlasPlan,
    /// When the calls write a scratch output in another axis order: the kernel copying it
    /// into the output's own order, and the scratch length.
    pub unpermute: Option<(crate::backend::plan::FusedKernel, usize)>,
}

/// Plan a contraction for cuBLAS, whatever its layouts: in place if possible; else on
/// canonical copies of the inputs; else (the output's adjacent axis is a loop) with the axes
/// reordered — batch, M, K, N — into a scratch output copied back into place afterwards.
pub fn recipe(
    axes: &[crate::backend::gemm::GemmAxis],
    la: &crate::backend::layout::Layout,
    lb: &crate::backend::layout::Layout,
) -> Result<GemmRecipe, NeedsCopy> {
    use crate::backend::gemm::GemmAxis::{self, Batch, K, M, N};
    use crate::backend::layout::{Axis, Layout};
    use crate::backend::plan::FusedKernel;
    // in place, or on canonical copies
    let direct =
        |axes: &[GemmAxis], la: &Layout, lb: &Layout| -> Result<(Vec<(usize, FusedKernel)>, BlasPlan), NeedsCopy> {
            match BlasPlan::new(&GemmPlan::new(axes, la, lb)) {
                Ok(bp) => Ok((vec![], bp)),
                // copies also help an output whose matrix axes did not merge because an input
                // stores them in another order
                Err(_) => {
                    let [(ka, na), (kb, nb)] = canonical_copies(axes, la, lb);
                    let bp = BlasPlan::new(&GemmPlan::new(axes, &na, &nb))?;
                    Ok((vec![(0, ka), (1, kb)], bp))
                }
            }
        };
    if let Ok((copies, blas)) = direct(axes, la, lb) {
        return Ok(GemmRecipe { copies, blas, unpermute: None });
    }
    // reorder the axes so that the output runs batch, M, N (N adjacent)
    let rank = axes.len();
    let perm: Vec<usize> = [Batch, M, K, N].iter().flat_map(|r| (0..rank).filter(move |&i| axes[i] == *r)).collect();
    let pick = |l: &Layout| Layout { axes: perm.iter().map(|&i| l.axes[i]).collect(), offset: l.offset };
    let axes_p: Vec<GemmAxis> = perm.iter().map(|&i| axes[i]).collect();
    let (copies, blas) = direct(&axes_p, &pick(la), &pick(lb))?;
    // the scratch is contiguous over the non-K axes in permuted order; read it in the
    // original order and write the output
    let out_p: Vec<usize> = perm.iter().copied().filter(|&i| axes[i] != K).collect();
    let mut stride = vec![0isize; rank];
    let mut acc = 1isize;
    for &i in out_p.iter().rev() {
        stride[i] = acc;
        acc *= la.axes[i].len as isize;
    }
    let view = Layout {
        axes: (0..rank)
            .filter(|&i| axes[i] != K)
            .map(|i| Axis { len: la.axes[i].len, stride: stride[i], lo: 0, hi: la.axes[i].len })
            .collect(),
        offset: 0,
    };
    let order: Vec<usize> = (0..view.axes.len()).collect();
    Ok(GemmRecipe { copies, blas, unpermute: Some((FusedKernel::copy(&view, &order), acc as usize)) })
}

/// What cuBLAS computes for `call` (its argument checks included), on host buffers: the
/// reference the planner is tested against, since no GPU is needed to know what a call means.
pub fn emulate(call: &BlasCall, a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), String> {
    let (rx, ry) = (
        if call.trans_x == Trans::N { call.rows } else { call.k },
        if call.trans_y == Trans::N { call.k } else { call.cols },
    );
    // cublas status INVALID_VALUE conditions for gemm
    if call.rows < 0 || call.cols < 0 || call.k < 0 || call.batch < 0 {
        return Err("negative size".into());
    }
    if call.ld_x < rx.max(1) || call.ld_y < ry.max(1) || call.ld_c < call.rows.max(1) {
        return Err(format!("leading dimension too small: {call:?}"));
    }
    let pick = |o: Operand| if o == Operand::A { a } else { b };
    let (xs, ys) = (pick(call.x), pick(call.y));
    for bi in 0..call.batch as i64 {
        for c in 0..call.cols as i64 {
            for r in 0..call.rows as i64 {
                let mut acc = 0f32;
                for t in 0..call.k as i64 {
                    let xi = call.off_x
                        + bi * call.stride_x
                        + if call.trans_x == Trans::N { r + t * call.ld_x as i64 } else { t + r * call.ld_x as i64 };
                    let yi = call.off_y
                        + bi * call.stride_y
                        + if call.trans_y == Trans::N { t + c * call.ld_y as i64 } else { c + t * call.ld_y as i64 };
                    acc += xs[xi as usize] * ys[yi as usize];
                }
                let ci = (call.off_c + bi * call.stride_c + r + c * call.ld_c as i64) as usize;
                out[ci] = acc + if call.beta == 0.0 { 0.0 } else { call.beta * out[ci] };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests_support {
    use crate::backend::gemm::GemmAxis;
    use crate::backend::layout::{Axis, Layout};
    use rand::seq::SliceRandom;
    use rand::Rng;

    /// A random contraction: random roles and lengths of 2..5 axes, each operand stored
    /// contiguously in a random order of the axes it indexes (broadcast elsewhere), sometimes
    /// a slice of a larger buffer.
    pub(crate) fn random_case(rng: &mut rand_chacha::ChaCha8Rng) -> (Vec<GemmAxis>, Layout, Layout, usize, usize) {
        loop {
            let rank = rng.gen_range(2..=5);
            let axes: Vec<GemmAxis> = (0..rank)
                .map(|_| [GemmAxis::Batch, GemmAxis::M, GemmAxis::N, GemmAxis::K][rng.gen_range(0..4)])
                .collect();
            if !axes.iter().any(|a| matches!(a, GemmAxis::M | GemmAxis::N)) {
                continue;
            }
            let lens: Vec<usize> = (0..rank).map(|_| rng.gen_range(1..=4)).collect();
            let mut layout = |uses: &dyn Fn(GemmAxis) -> bool| {
                let mut mine: Vec<usize> = (0..rank).filter(|&i| uses(axes[i])).collect();
                mine.shuffle(rng);
                let mut strides = vec![0isize; rank];
                let mut acc = 1isize;
                for &i in mine.iter().rev() {
                    strides[i] = acc;
                    acc *= lens[i] as isize;
                }
                let offset = rng.gen_range(0..3) as isize;
                let axes = (0..rank).map(|i| Axis { len: lens[i], stride: strides[i], lo: 0, hi: lens[i] }).collect();
                (Layout { axes, offset }, acc as usize + offset as usize)
            };
            let (la, na) = layout(&|x| x != GemmAxis::N);
            let (lb, nb) = layout(&|x| x != GemmAxis::M);
            return (axes, la, lb, na, nb);
        }
    }
}

#[cfg(test)]
mod tests;
