dino::vit! {
    pub Vit { image: 224, patch: 16, dim: 384, depth: 12, heads: 6, drop_path: 1.0 }
}
fn main() {}
