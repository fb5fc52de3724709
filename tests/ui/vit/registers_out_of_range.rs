dino::vit! {
    pub TooMany { image: 224, patch: 14, dim: 384, depth: 12, heads: 6, registers: 32 }
}
dino::vit! {
    pub Fractional { image: 224, patch: 14, dim: 384, depth: 12, heads: 6, registers: 2.5 }
}
fn main() {}
