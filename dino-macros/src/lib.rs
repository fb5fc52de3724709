//! The `vit!` and `dino!` declaration macros (arriving with the model DSL).
