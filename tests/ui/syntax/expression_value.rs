dino::vit! {
    pub Vit { image: 224, patch: 16, dim: 6 * 64, depth: 12, heads: 6 }
}
fn main() {}
