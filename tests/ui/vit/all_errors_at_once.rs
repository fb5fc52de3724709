dino::vit! {
    /// Three mistakes, three errors.
    pub Vit { image: 224, patch: 15, dim: 384, depth: 12, heads: 5, norm_epsilon: 1e-6 }
}
fn main() {}
