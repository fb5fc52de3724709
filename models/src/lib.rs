//! The dino model zoo, written only as `vit!`/`dino!` declarations (arriving with the model DSL).
