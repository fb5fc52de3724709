dino::vit! {
    pub Vit { image: 224, patch: (16, 16), dim: 384, depth: 12, heads: 6 }
}
fn main() {}
