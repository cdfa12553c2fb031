//! The whitelist domain: what a rule is, what policy allows, how descriptions carry expiry,
//! and the trait EC2 sits behind. No HTTP and no AWS SDK types here.
//!
//! A change is planned once ([`PlannedChange`], `plan.rs`: arguments resolved, read-only and
//! policy checked, description and expiry rendered), then made by the service or only tried
//! (`dry_run.rs`: EC2 asked with `DryRun`); both files are parts of `service`. The policy also
//! speaks to the model: [`instructions`].
//!
//! A target is a security group or an EC2 managed prefix list ([`ids`]); the service talks to
//! the firewall through [`prefix_list::Targets`], which turns a prefix list's entries into rules
//! and makes each prefix-list write a read-modify-write on the list's version, retried on
//! conflict. [`receipts`] carries what AWS answered a change with (account, request ids) to
//! its audit entries, and who the change is for to the AWS layer.
//!
//! May import: `caller`, `metrics`. Imported by: `aws` (implements `Firewall`), `host`
//! (implements `Recorder`, sweeps), `tools`, `app`, `settings`.

pub mod audit;
pub mod cache;
pub mod consent;
pub mod consent_token;
pub mod description;
pub mod error;
pub mod firewall;
pub mod flight;
pub mod gate;
pub mod ids;
pub mod instructions;
pub mod marker;
pub mod policy;
pub mod prefix_list;
pub mod receipts;
pub mod reconcile;
pub mod rules;
pub mod service;
pub mod target;

pub use crate::caller::Caller;
pub use consent::{Action, Asker, ConsentRules, Consented, NobodyToAsk, ProposedChange, Stop};
pub use consent_token::{ConsentSeal, NonceStore, StateError};
pub use firewall::{
    Firewall, FirewallError, FwFuture, GroupInfo, GroupPage, Keys, PrefixListEdit, PrefixListEntry,
    PrefixListState, Scope,
};
pub use marker::{Marker, MarkerKey};
pub use policy::{Policy, Refusal};

pub use rules::{ExistingRule, RuleSpec};
pub use service::{
    AddArgs, AwsVerdict, ChangeKind, Defaults, DryRun, Error, FindArgs, Found, GroupGuard, GroupLockFuture,
    GroupLocks, History, HistoryQuery, MoveArgs, Moved, Parts, PlannedChange, PlannedRule, Relation, Renewal,
    Revocation, Revoked, RuleArgs, RuleView, SweepFence, Unfenced, Whitelist,
};
pub use target::{NamedPort, Ports, Protocol};
