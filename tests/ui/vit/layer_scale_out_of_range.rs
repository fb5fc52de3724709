dino::vit! {
    pub TooLarge { image: 224, patch: 14, dim: 384, depth: 12, heads: 6, layer_scale: 10 }
}
dino::vit! {
    pub Zero { image: 224, patch: 14, dim: 384, depth: 12, heads: 6, layer_scale: 0.0 }
}
fn main() {}
