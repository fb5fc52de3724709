dino::vit! {
    pub Vit { image: 224, patch: 16, dim: 384, depth: 12, heads: 6, norm_eps: 1e400 }
}
fn main() {}
