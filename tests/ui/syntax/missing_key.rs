dino::vit! {
    pub Vit { image: 224, patch: 16, dim: 384, depth: 12 }
}
fn main() {}
