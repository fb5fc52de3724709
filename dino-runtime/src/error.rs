//! The runtime's error type.
use std::path::PathBuf;

/// Everything that can go wrong in the runtime, with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Autograd met an op that is not a luminal primitive.
    #[error("autograd: `{op}` is not a luminal primitive; run autograd before any backend pass")]
    NotPrimitive { op: String },

    /// The loss handed to autograd has more than one element.
    #[error("autograd: the loss must have exactly one element, its dims are {dims}")]
    LossNotScalar { dims: String },

    /// A gradient was requested for a node whose buffer shape the graph does not determine.
    #[error("autograd: `{name}` has no known shape (is it used by the graph?)")]
    UnknownShape { name: String },

    /// A view with symbolic slice or pad amounts that autograd cannot invert.
    #[error("autograd: cannot invert the view {view} of `{op}`: {why}")]
    View { op: String, view: String, why: String },

    /// A graph input was not set before execution.
    #[error("input `{name}` has no value: set it (or load it) before executing the graph")]
    MissingInput { name: String },

    /// A tensor of the wrong size was handed to the runtime.
    #[error("`{name}`: expected {expected} elements ({shape}), got {got}")]
    WrongSize { name: String, shape: String, expected: usize, got: usize },

    /// A named tensor has the right name and the wrong shape (transposed, another model's).
    #[error("`{name}` has shape {got:?}, the model needs {expected:?}")]
    WrongShape { name: String, expected: Vec<usize>, got: Vec<usize> },

    /// Something the caller named does not exist: a tensor, a pass, a preset, a step input.
    #[error("no {kind} named `{name}`{hint}")]
    UnknownName { kind: &'static str, name: String, hint: String },

    /// A configuration value out of its valid range.
    #[error("invalid {what}: {why}")]
    Config { what: String, why: String },

    /// Training produced a non-finite loss (`context`: what was kept, what to try).
    #[error("the loss is {value} at iteration {iteration}{}: training stopped{context}", epoch_note(.epoch))]
    NonFiniteLoss { value: f32, iteration: usize, epoch: Option<usize>, context: String },

    /// A backend could not compile or run a graph.
    #[error("backend: {0}")]
    Backend(String),

    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// A safetensors file that cannot be read or has the wrong content.
    #[error("{path}: {why}")]
    Format { path: PathBuf, why: String },

    /// A collective operation across the ranks of a data-parallel run failed or timed out.
    #[error("rank {rank} of {world}: {op}: {why}")]
    Collective { op: String, rank: usize, world: usize, why: String },

    /// A compiled artifact built for something else than what the run asks for.
    #[error("{path} was compiled for {what} {built}, this run asks for {asked}: compile it again with `dino compile` (or drop --compiled)")]
    ArtifactMismatch { path: PathBuf, what: String, built: String, asked: String },
}

fn epoch_note(epoch: &Option<usize>) -> String {
    epoch.map(|e| format!(" (epoch {e})")).unwrap_or_default()
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
