//! The dynamic dimensions of the project's graphs, by name. luminal names a dynamic dimension
//! by one character (`Dyn<'b'>`, `cx.set_dyn_dim('b', 64)`); these constants and aliases are
//! the one table of what each character means, so a graph and the code feeding it agree.
//!
//! | name          | char | what it counts                                        |
//! |---------------|------|-------------------------------------------------------|
//! | `BATCH`       | `b`  | images of a training step or of one forward pass      |
//! | `GLOBAL_ROWS` | `g`  | global-crop rows of a DINO step (2 x batch)           |
//! | `LOCAL_ROWS`  | `l`  | local-crop rows of a DINO step (local crops x batch)  |
//! | `LOCAL_VIEWS` | `v`  | local crops per image                                 |
//! | `PATCH_ROWS`  | `p`  | patch rows of the global crops (iBOT: rows x patches) |
//! | `MASKED_ROWS` | `m`  | iBOT's gathered masked patch rows (an upper bound)    |
//! | `PATCHES`     | `n`  | patches of an image of any size (any-size runner)     |
//! | `TOKENS`      | `t`  | tokens of an image of any size (patches + [CLS])      |
//! | `FEATURES`    | `f`  | feature width of the linear probe                     |
//! | `CLASSES`     | `k`  | classes of the linear probe                           |
use luminal::prelude::Dyn;

pub const BATCH: char = 'b';
pub const GLOBAL_ROWS: char = 'g';
pub const LOCAL_ROWS: char = 'l';
pub const LOCAL_VIEWS: char = 'v';
pub const PATCH_ROWS: char = 'p';
pub const MASKED_ROWS: char = 'm';
pub const PATCHES: char = 'n';
pub const TOKENS: char = 't';
pub const FEATURES: char = 'f';
pub const CLASSES: char = 'k';

pub type Batch = Dyn<BATCH>;
pub type GlobalRows = Dyn<GLOBAL_ROWS>;
pub type LocalRows = Dyn<LOCAL_ROWS>;
pub type LocalViews = Dyn<LOCAL_VIEWS>;
pub type PatchRows = Dyn<PATCH_ROWS>;
pub type MaskedRows = Dyn<MASKED_ROWS>;
pub type Patches = Dyn<PATCHES>;
pub type Tokens = Dyn<TOKENS>;
pub type Features = Dyn<FEATURES>;
pub type Classes = Dyn<CLASSES>;
