//! The whitelist domain: what a rule is, what policy allows, how descriptions carry expiry,
//! and the trait EC2 sits behind. No HTTP and no AWS SDK types here.
//!
//! May import: `caller`, `metrics`. Imported by: `aws` (implements `Firewall`), `host`
//! (implements `Recorder`, sweeps), `tools`, `app`, `settings`.

pub mod audit;
pub mod cache;
pub mod description;
pub mod error;
pub mod firewall;
pub mod flight;
pub mod marker;
pub mod policy;
pub mod reconcile;
pub mod rules;
pub mod service;
pub mod target;

pub use crate::caller::Caller;
pub use firewall::{Firewall, FirewallError, FwFuture, Keys, Scope};
pub use marker::{Marker, MarkerKey};
pub use policy::{Policy, Refusal};
pub use rules::{ExistingRule, RuleSpec};
pub use service::{
    AddArgs, Defaults, Error, GroupGuard, GroupLockFuture, GroupLocks, Parts, RuleArgs, RuleView, Whitelist,
};
pub use target::{NamedPort, Ports, Protocol};
