//! What can go wrong with a plugin, worded so an operator knows who failed and why.

use std::{fmt, sync::Arc, time::Duration};

/// A hook of the WIT contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `config.validate-config`
    ValidateConfig,
    /// `call-hook.on-call`
    OnCall,
    /// `result-hook.on-result`
    OnResult,
    /// `list-hook.on-list`
    OnList,
    /// `catalog-hook.on-catalog` (WIT 0.1.1)
    OnCatalog,
}

impl Hook {
    /// The hook's name as the WIT contract spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::ValidateConfig => "validate-config",
            Hook::OnCall => "on-call",
            Hook::OnResult => "on-result",
            Hook::OnList => "on-list",
            Hook::OnCatalog => "on-catalog",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hook invocation that did not produce a usable verdict.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy \"{plugin}\" {hook} {failure}")]
pub struct PluginError {
    /// The plugin's name in the chain config.
    pub plugin: Arc<str>,
    /// The hook that failed.
    pub hook: Hook,
    /// What went wrong.
    pub failure: Failure,
}

/// Why an invocation failed. Each names the limit it hit, if any.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The fuel budget ran out (an endless or too expensive computation).
    #[error("ran out of fuel (limit {limit})")]
    OutOfFuel {
        /// The plugin's fuel limit.
        limit: u64,
    },
    /// The wall-clock deadline passed.
    #[error("passed its deadline ({} ms)", .limit.as_millis())]
    Deadline {
        /// The plugin's deadline.
        limit: Duration,
    },
    /// The instance tried to grow its memory past the limit.
    #[error("exceeded its memory limit ({limit} bytes)")]
    Memory {
        /// The plugin's memory limit in bytes.
        limit: usize,
    },
    /// The instance exhausted its call stack (runaway recursion).
    #[error("overflowed its stack")]
    StackOverflow,
    /// The instance trapped (a Rust panic, `unreachable`, a bad memory access,
    /// a call to an import it is not granted).
    #[error("trapped: {0}")]
    Trap(String),
    /// The verdict was unusable: malformed JSON, too large, wrong shape.
    #[error("returned {0}")]
    BadOutput(String),
    /// No instance was free: `engine.max_instances` instances are serving
    /// calls in flight. The call is refused at once rather than queued.
    #[error("found no free instance (all engine.max_instances = {limit} are in use); try again")]
    Busy {
        /// The engine's instance limit.
        limit: u32,
    },
    /// The instance could not be created.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    /// An operator switched the plugin off (`warden kill plugin`); it is
    /// treated as failing, so it denies unless `fail_open`.
    #[error("is switched off by kill switch {id}: {reason}")]
    SwitchedOff {
        /// The switch (`plugin:<pattern>`).
        id: String,
        /// The operator's reason.
        reason: String,
    },
}

/// Why a plugin could not be loaded. Loading happens before a chain goes live,
/// so none of these ever reaches a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The wasmtime engine could not be created.
    #[error("cannot create the Wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component, or compilation failed.
    #[error("plugin \"{plugin}\": not a loadable WebAssembly component: {reason}")]
    Compile {
        /// The plugin's name.
        plugin: String,
        /// The compiler's explanation.
        reason: String,
    },
    /// The component imports or exports something the contract does not allow.
    #[error("plugin \"{plugin}\": {reason}")]
    Contract {
        /// The plugin's name.
        plugin: String,
        /// What does not fit.
        reason: String,
    },
    /// The plugin's limits cannot be honoured by this engine.
    #[error("plugin \"{plugin}\": {reason}")]
    Limits {
        /// The plugin's name.
        plugin: String,
        /// What is wrong with them.
        reason: String,
    },
    /// The plugin rejected its configuration.
    #[error("plugin \"{plugin}\" rejected its config: {}", .problems.join("; "))]
    Config {
        /// The plugin's name.
        plugin: String,
        /// Every problem the plugin reported.
        problems: Vec<String>,
    },
    /// Validating the configuration failed (trap, fuel...).
    #[error(transparent)]
    Invocation(#[from] PluginError),
}
