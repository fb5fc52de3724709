dino::vit! {
    pub Swish { image: 224, patch: 14, dim: 384, depth: 12, heads: 6, mlp: swish }
}
dino::vit! {
    pub Nearest { image: 224, patch: 14, dim: 384, depth: 12, heads: 6, interpolation: nearest }
}
fn main() {}
