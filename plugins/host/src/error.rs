//! The crate's errors: why a plugin could not be loaded ([`Error`]), and what went wrong in one
//! call of a loaded plugin ([`Fault`], which the `MergePolicy` impl contains as a
//! needs-review resolution).

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are neither a WebAssembly core module nor a component.
    #[error("not a WebAssembly module or component")]
    NotWasm,
    /// A core module could not be turned into a component (it lacks the WIT metadata that
    /// `converge-plugin-sdk` embeds, or imports what the world does not provide).
    #[error("could not encode the core module as a component: {0}")]
    Encode(String),
    /// The component did not validate or compile.
    #[error("could not compile the component: {0}")]
    Compile(String),
    /// The component imports something; a plugin must import nothing (no WASI, no host calls).
    #[error("the plugin imports {}; a merge-policy plugin must import nothing", .imports.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", "))]
    HasImports {
        /// The names of its imports.
        imports: Vec<String>,
    },
    /// The component does not export the `converge:policy` world's `resolve` and `describe`.
    #[error("the plugin does not export the converge:policy@0.1.0 world: {0}")]
    Exports(String),
    /// The plugin's `describe` failed or answered nonsense.
    #[error("the plugin's describe failed: {0}")]
    Describe(String),
    /// The wasm engine could not be set up.
    #[error("could not set up the wasm engine: {0}")]
    Engine(String),
    /// The plugin file could not be read.
    #[error("could not read the plugin file")]
    Io(#[from] std::io::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in one call of a plugin. Never a panic: the call is cut short and the
/// conflict is left for review.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The call used up its fuel (a loop, or simply too much work).
    #[error("ran out of fuel ({limit} units)")]
    OutOfFuel {
        /// The fuel each call gets.
        limit: u64,
    },
    /// The plugin tried to grow its memory past the cap.
    #[error("hit the memory limit ({limit} bytes)")]
    MemoryLimit {
        /// The memory cap in bytes.
        limit: usize,
    },
    /// The plugin trapped (a panic, `unreachable`, a stack overflow, …).
    #[error("trapped: {0}")]
    Trapped(String),
    /// The call failed another way.
    #[error("failed: {0}")]
    Failed(String),
    /// The plugin answered `merged` with fields that are not a JSON object.
    #[error("returned malformed fields: {0}")]
    Malformed(String),
}

impl Fault {
    /// A short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Fault::OutOfFuel { .. } => "out_of_fuel",
            Fault::MemoryLimit { .. } => "memory_limit",
            Fault::Trapped(_) => "trapped",
            Fault::Failed(_) => "failed",
            Fault::Malformed(_) => "malformed_output",
        }
    }
}
