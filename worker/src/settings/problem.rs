//! One problem in the configuration, as every section's check reports it. A leaf: the typed
//! settings and the sections that validate themselves (`[auth]`, `[aws]`) both use it.

/// One problem in the configuration: the key, the value as written, and what would be right.
/// Every section's conversion reports these, all at once, so an operator fixes a file in one
/// pass instead of one error per restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `log.level`.
    pub key: String,
    /// The offending value as the operator wrote it (empty when there is none to show).
    pub value: String,
    /// What is wrong and what would be right.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.key, self.reason)
        } else {
            write!(f, "{} = {}: {}", self.key, self.value, self.reason)
        }
    }
}

impl Problem {
    /// A problem with `key`; the value is shown as written.
    pub fn new(key: impl Into<String>, value: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem { key: key.into(), value: value.into(), reason: reason.into() }
    }
}
