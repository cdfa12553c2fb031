//! A pre-fork process supervisor in the shape of gunicorn's arbiter, without its known failures.
//!
//! The supervisor binds the listening sockets itself and keeps them open for its whole life, so a
//! worker that exits never takes queued connections with it. Workers are separate programs
//! (usually the same binary, re-executed) that receive the listeners as inherited descriptors and
//! talk to the supervisor over a private socket pair ([`ipc`]). Every replacement of a worker is
//! readiness-gated: the successor must report READY before its predecessor is told to drain.
//!
//! The crate knows nothing of HTTP, MCP or AWS: [`child`] is the side a worker program links to.
#![warn(missing_docs)]

pub mod arbiter;
pub mod child;
pub mod control;
pub mod ipc;
pub mod metrics;
pub mod pidfile;
pub mod proctitle;
mod signals;
pub mod sock;
mod spawn;
pub mod systemd;
mod table;
pub mod upgrade;

pub use arbiter::{Error, Identity, ReloadFn, Settings, Supervisor, WorkerSpec};
pub use sock::BindAddr;
pub use spawn::RunAs;

/// Exit code a worker uses to say "my configuration cannot work": shared by both sides so the
/// supervisor can tell a broken deployment from a crash (gunicorn's `WORKER_BOOT_ERROR`).
pub const WORKER_BOOT_ERROR: i32 = 3;

/// Exit code of the supervisor when workers keep failing to boot: distinct from a config error
/// (2) so that service managers and scripts can tell the two apart.
pub const SUPERVISOR_BOOT_FAILURE: i32 = 3;
