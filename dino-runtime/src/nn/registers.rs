//! DINOv2's register tokens and the token-axis joins they need.
use luminal::prelude::symbolic::Expression;
use luminal::prelude::*;

/// DINOv2's register tokens: `count` learned tokens after [CLS], with no position embedding.
/// Their count is a value, not a type: the parameter's graph tensor is `(R, D)` by its shape
/// tracker, and the token counts the forward calls name include them (`NT = NP + 1 + R`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registers {
    pub id: NodeIndex,
    pub count: usize,
}

/// `[CLS]`, the registers (if any), then `patches`, along the token axis.
///
/// ```text
///   cls (B,1,D) ──pad(0, R+n)──┐
///   reg (R,D) ─expand─pad(1,n)─┼─ + ──> (B, 1+R+n, D)
///   patches (B,n,D) ─pad(1+R,0)┘
/// ```
pub fn join<B: Dimension, X: Dimension, T: Dimension, const D: usize>(
    registers: Option<Registers>,
    cls: GraphTensor<(B, Const<1>, Const<D>)>,
    patches: GraphTensor<(B, X, Const<D>)>,
) -> GraphTensor<(B, T, Const<D>)> {
    let Some(r) = registers else { return cls.concat_along::<(B, T, Const<D>), Axis<1>, _>(patches) };
    // the type says `'-'` rows (a count no type names); the shape tracker holds it. Each part
    // is padded to the whole token axis and the three added, so every intermediate has the
    // result's type (a concatenation in two steps would give the middle one a type without
    // its length)
    let st = ShapeTracker::new(&[r.count.into(), D.into()]);
    let reg = GraphTensor::<(Dyn<'-'>, Const<D>)>::from_id(r.id, st, cls.graph());
    let reg = reg.expand::<(B, Dyn<'-'>, Const<D>), Axis<0>>();
    let n: Expression = patches.shape.shape()[1].clone().into();
    let (z, one, k) = (Expression::from(0), Expression::from(1), Expression::from(r.count));
    let cls = cls.pad::<(B, T, Const<D>), _, _>(&[(z, z), (z, k + n), (z, z)]);
    let reg = reg.pad::<(B, T, Const<D>), _, _>(&[(z, z), (one, n), (z, z)]);
    let patches = patches.pad::<(B, T, Const<D>), _, _>(&[(z, z), (one + k, z), (z, z)]);
    cls + reg + patches
}

/// Tokens without the registers: `[CLS]` then the patches (the input unchanged without
/// registers).
///
/// ```text
///   t (B, 1+R+n, D) ─┬─ [..1] ──pad(0, n+R)─┐
///                    └─ [1+R..] ─pad(1, R)──┴─ + ── [..1+n] ──> (B, 1+n, D)
/// ```
pub fn drop<B: Dimension, T: Dimension, const D: usize>(
    registers: Option<Registers>,
    t: GraphTensor<(B, T, Const<D>)>,
) -> GraphTensor<(B, T, Const<D>)> {
    let Some(r) = registers else { return t };
    let cls = t.slice((.., ..Expression::from(1), ..)).contiguous().realize::<(B, Const<1>, Const<D>)>();
    // an explicit end: luminal's `contiguous` takes an open-ended slice's length as the whole
    // dim's, not the dim's minus the start
    let len: Expression = t.shape.shape()[1].clone().into();
    let patches = t.slice((.., Expression::from(1 + r.count)..len, ..)).contiguous();
    let n: Expression = patches.shape.shape()[1].clone().into();
    let (z, k) = (Expression::from(0), Expression::from(r.count));
    // both padded to the input's length `T` and added (see `join`), the last `R` rows (zeros)
    // then cut off
    let cls = cls.pad::<(B, T, Const<D>), _, _>(&[(z, z), (z, n + k), (z, z)]);
    let patches = patches.pad::<(B, T, Const<D>), _, _>(&[(z, z), (Expression::from(1), k), (z, z)]);
    (cls + patches).slice((.., ..n + 1, ..)).contiguous().realize::<(B, T, Const<D>)>()
}
