//! Why a whitelist operation did not happen, each kind saying what to do about it. A leaf of the
//! domain: the service, the audit records and reconciliation all answer with it.

use super::consent::Stop;
use super::firewall::FirewallError;
use super::policy::Refusal;

/// Why an operation did not happen; each says what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An argument is wrong.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Policy refused.
    #[error("{0}")]
    Policy(Refusal),
    /// AWS refused or failed.
    #[error("{0}")]
    Aws(FirewallError),
    /// The audit log could not record the change: before the AWS call (no change was made) or
    /// after it (the change was made; its intent is recorded and will be reconciled).
    #[error("{0}")]
    Audit(String),
    /// The change needs a person's consent and does not go ahead (declined, being asked, or
    /// refused); nothing was changed.
    #[error("{0}")]
    Consent(Stop),
    /// Something the host shares (a group's lock) could not be had; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        Error::Policy(r)
    }
}

impl From<FirewallError> for Error {
    fn from(e: FirewallError) -> Error {
        Error::Aws(e)
    }
}
