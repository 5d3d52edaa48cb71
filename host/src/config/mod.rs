//! Configuration files: parsed strictly, validated into internal forms, and
//! every problem reported at once with the file and the field it is in.
//!
//! - [`gateway`]: the gateway (`warden.toml`).
//! - [`chain`]: a policy chain (`policies/*.toml`).
//! - [`identity`]: trusted token issuers and required scopes (part of `warden.toml`).

pub mod chain;
mod controls;
pub mod gateway;
pub mod identity;
mod limits;
pub(crate) mod read;

use std::{fmt, path::PathBuf};

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in.
    pub file: PathBuf,
    /// Where in the file: `plugin[1].limits.fuel`, or empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.as_str() {
            "" => write!(f, "{}: {}", self.file.display(), self.message),
            path => write!(f, "{}: {}: {}", self.file.display(), path, self.message),
        }
    }
}

/// Every problem found in a configuration; never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        writeln!(f, "invalid configuration ({count} problem{}):", if count == 1 { "" } else { "s" })?;
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// Collects problems for one file.
#[derive(Debug)]
pub struct Problems {
    file: PathBuf,
    list: Vec<Problem>,
}

impl Problems {
    /// Start collecting problems found in `file`.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self { file: file.into(), list: Vec::new() }
    }

    /// Record a problem at `path` (empty for the whole file).
    pub fn push(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.list.push(Problem { file: self.file.clone(), path: path.into(), message: message.to_string() });
    }

    /// Record every problem of another error (from another file, say).
    pub fn extend(&mut self, error: ConfigError) {
        self.list.extend(error.problems);
    }

    /// The recorded problems as an error. Call only after recording one.
    pub fn into_error(self) -> ConfigError {
        debug_assert!(!self.list.is_empty());
        ConfigError { problems: self.list }
    }

    /// `Ok(value)` if nothing was recorded, else every problem.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() { Ok(value) } else { Err(ConfigError { problems: self.list }) }
    }
}
