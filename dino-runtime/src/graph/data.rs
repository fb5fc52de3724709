//! Moving data in and out of a graph's tensor store.
use luminal::prelude::*;

use crate::error::{Error, Result};

/// Node handles that graph passes keep up to date (luminal's `ToIdsMut` for a plain list).
#[derive(Debug, Clone, Default)]
pub struct Handles(pub Vec<NodeIndex>);

impl ToIdsMut for Handles {
    fn to_ids_mut(&mut self) -> Vec<&mut NodeIndex> {
        self.0.iter_mut().collect()
    }
}

/// Put `data` in the node's slot, to be read by the next execution (a move, no copy).
pub fn set(cx: &mut Graph, id: NodeIndex, data: Vec<f32>) {
    cx.set_tensor(id, 0, Tensor::new(data));
}

/// The f32 buffer in a node's slot, if it has one.
pub fn get(cx: &Graph, id: NodeIndex) -> Option<&[f32]> {
    cx.get_tensor_ref(id, 0).and_then(|t| t.data.as_any().downcast_ref::<Vec<f32>>()).map(|v| v.as_slice())
}

/// Like [`get`], with an error naming the node when the slot is empty.
pub fn get_or_err<'a>(cx: &'a Graph, id: NodeIndex, name: &str) -> Result<&'a [f32]> {
    get(cx, id).ok_or_else(|| Error::MissingInput { name: name.to_string() })
}

/// Take the buffer out of a node's slot.
pub fn take(cx: &mut Graph, id: NodeIndex) -> Option<Vec<f32>> {
    let mut t = cx.get_tensor(id, 0)?;
    t.data.as_any_mut().downcast_mut::<Vec<f32>>().map(std::mem::take)
}
