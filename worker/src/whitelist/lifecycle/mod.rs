//! The life of an access beyond one add or one remove (issue 14): renewing a managed rule's
//! expiry (`renew.rs`); finding where an address or a user is allowed across every group the
//! caller may touch, and listing those groups (`find.rs`); removing an address's or a user's
//! rules from all of them (`revoke.rs`); moving a user's access in a group to a new address
//! (`move_access.rs`); the audit log read back, filtered and paged (`history.rs`). Each change is planned as a [`super::PlannedChange`] (policy checked
//! before any AWS call), then written through the same audited path as `whitelist_add` and
//! `whitelist_remove`: intent durable before the AWS call, outcome after.
//!
//! Parts of `service` (they use its private state); nothing here is imported by another file.

#[path = "find.rs"]
mod find;
#[path = "history.rs"]
mod history;
#[path = "move_access.rs"]
mod move_access;
#[path = "renew.rs"]
mod renew;
#[path = "revoke.rs"]
mod revoke;

pub use find::{FindArgs, Found, Relation};
pub use history::{History, HistoryQuery};
pub use move_access::{MoveArgs, Moved};
pub use renew::Renewal;
pub use revoke::{Revocation, Revoked};
