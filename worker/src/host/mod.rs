//! What the workers of one host share, through files in `state_dir`: the audit log, the cache
//! change counters, the single flight of group reads (`shared_reads`), the index of groups with
//! expiring rules, the per-group locks of capped adds, the consumed consent states, and the
//! sweeper (one per host, whoever holds its lock). With `[redis]`, the `fleet_*` files share
//! the same things across hosts, each falling back to the host's files while Redis does not
//! answer.
//!
//! May import: `whitelist` (the traits these files implement, and the service the sweeper
//! calls), `settings`, `fleet` (the link, keys, locks, lease). Imported by: `app`, `ratelimit` (its table is a
//! state file), `process` (reopening the audit log on USR1).

pub mod audit_file;
pub mod change_counters;
pub mod consent_nonces;
pub mod expiry_index;
pub mod fleet_group_locks;
pub mod fleet_nonces;
pub mod fleet_reads;
pub mod fleet_sweep;
pub mod fleet_versions;
pub mod group_locks;
pub mod marker_key;
pub mod shared_reads;
pub mod state_file;
pub mod sweeper;

pub use audit_file::AuditLog;
pub use change_counters::ChangeCounters;
pub use consent_nonces::NonceFiles;
pub use fleet_group_locks::FleetGroupLocks;
pub use fleet_nonces::FleetNonces;
pub use fleet_reads::FleetReads;
pub use fleet_versions::FleetVersions;
pub use group_locks::GroupLockFiles;
pub use shared_reads::ReadFiles;
