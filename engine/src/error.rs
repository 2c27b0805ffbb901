//! The engine's error types. Internal failures ([`Error`]) and bad input
//! ([`ChangeError`]: a change set that breaks a rule) are different types, because callers
//! answer them differently: a 5xx and an alert, or a 422 listing every problem.

use std::fmt;

/// An internal failure: storage, I/O, corruption, misconfiguration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB reported an error.
    #[error("storage error: {0}")]
    Storage(String),
    /// A file-system operation failed.
    #[error("i/o error: {0}")]
    Io(String),
    /// A stored value failed validation.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The store was written by an incompatible version.
    #[error("schema mismatch: {0}")]
    Schema(String),
    /// The store was created under another PMH-ID secret.
    #[error("this store was created with a different pmh_id_secret; every PMH-ID would miss, refusing to open")]
    SecretMismatch,
    /// The access log cannot be written just now (its last batch failed and is being
    /// tried again): lookups are refused until it can, since every answer and refusal
    /// must leave its trail (design §5.4).
    #[error("the access log cannot be written; lookups are refused until it can")]
    AccessLogUnavailable,
    /// A change set or snapshot was rejected; nothing was written.
    #[error(transparent)]
    Rejected(#[from] ChangeError),
}

/// Converts a RocksDB error at the boundary (the one place that does).
pub(crate) fn storage(e: rocksdb::Error) -> Error {
    Error::Storage(e.into_string())
}

/// One broken rule in a change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeProblem {
    /// 0-based position of the change in the set.
    pub index: usize,
    /// The field concerned (PMH API name).
    pub field: &'static str,
    /// The rule, as a short stable phrase.
    pub rule: &'static str,
    /// A readable explanation.
    pub message: String,
}

/// A rejected change set: every problem found, not only the first. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ChangeError {
    /// All problems, in change order.
    pub problems: Vec<ChangeProblem>,
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "change set rejected ({} problem(s))", self.problems.len())?;
        for p in self.problems.iter().take(20) {
            write!(f, "; change {}: {} ({}): {}", p.index, p.field, p.rule, p.message)?;
        }
        Ok(())
    }
}
