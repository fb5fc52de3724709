//! Classification of graph nodes into luminal's primitive ops (plus our `Detach`).
use luminal::op::{
    self, Constant, Contiguous, Exp2, Function, LessThan, Log2, MaxReduce, Mod, Operator, Recip, Sin, Sqrt, SumReduce,
};

/// A luminal 0.2.0 primitive, the unit autograd differentiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prim {
    /// An input or parameter (a leaf).
    Function,
    /// A constant (a leaf).
    Constant,
    Log2,
    Exp2,
    Sin,
    Sqrt,
    Recip,
    Add,
    Mul,
    Mod,
    LessThan,
    SumReduce(usize),
    MaxReduce(usize),
    Contiguous,
    /// Our identity with no gradient (`graph::Detach`).
    Detach,
}

impl Prim {
    /// The primitive an operator is, or `None` for anything else (compiled ops, prints...).
    pub fn of(o: &dyn Operator) -> Option<Prim> {
        let a = o.as_any();
        Some(if a.is::<Function>() {
            Prim::Function
        } else if a.is::<Constant>() {
            Prim::Constant
        } else if a.is::<Log2>() {
            Prim::Log2
        } else if a.is::<Exp2>() {
            Prim::Exp2
        } else if a.is::<Sin>() {
            Prim::Sin
        } else if a.is::<Sqrt>() {
            Prim::Sqrt
        } else if a.is::<Recip>() {
            Prim::Recip
        } else if a.is::<op::Add>() {
            Prim::Add
        } else if a.is::<op::Mul>() {
            Prim::Mul
        } else if a.is::<Mod>() {
            Prim::Mod
        } else if a.is::<LessThan>() {
            Prim::LessThan
        } else if let Some(SumReduce(d)) = a.downcast_ref::<SumReduce>() {
            Prim::SumReduce(*d)
        } else if let Some(MaxReduce(d)) = a.downcast_ref::<MaxReduce>() {
            Prim::MaxReduce(*d)
        } else if a.is::<Contiguous>() {
            Prim::Contiguous
        } else if a.is::<crate::graph::Detach>() {
            Prim::Detach
        } else {
            return None;
        })
    }

    /// Unary primitives map their input's physical buffer and ignore the edge view.
    pub fn is_unary(self) -> bool {
        matches!(self, Prim::Log2 | Prim::Exp2 | Prim::Sin | Prim::Sqrt | Prim::Recip)
    }

    /// Leaves of the graph: no inputs, nothing to differentiate through.
    pub fn is_leaf(self) -> bool {
        matches!(self, Prim::Function | Prim::Constant)
    }
}
