dino::vit! {
    pub Vit { image: 224, patch: 16, dim: 10, depth: 2, heads: 2, mlp_ratio: 0.25 }
}
fn main() {}
