//! What the supervisor runs: the settings a start takes and a reload may change, and the hook
//! that re-reads them on HUP.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::sock::BindAddr;
use crate::spawn::RunAs;

/// What the supervisor runs: everything a reload may change.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Addresses to listen on (ignored when systemd passed sockets).
    pub binds: Vec<BindAddr>,
    /// Number of workers.
    pub workers: usize,
    /// A worker silent for this long is aborted.
    pub timeout: Duration,
    /// How long draining workers get on TERM, recycle and reload.
    pub graceful_timeout: Duration,
    /// Requests before a worker is recycled; 0 = never.
    pub max_requests: u64,
    /// Random extra requests, so workers do not all recycle at once.
    pub max_requests_jitter: u64,
    /// Listen queue length.
    pub backlog: i32,
    /// SO_REUSEPORT on TCP listeners.
    pub reuse_port: bool,
    /// Where to write the supervisor's pid.
    pub pidfile: Option<PathBuf>,
    /// Privileges workers drop to.
    pub run_as: Option<RunAs>,
    /// File mode creation mask of the supervisor (inherited by workers).
    pub umask: Option<u32>,
    /// The worker program.
    pub worker: WorkerSpec,
}

/// The program a worker runs, and the settings it is sent.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Executable; `/proc/self/exe` re-executes the supervisor's own binary.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<OsString>,
    /// The application's settings, sent to each worker in its assignment.
    pub payload: serde_json::Value,
}

/// Re-reads the configuration on SIGHUP; an error keeps the running one.
pub type ReloadFn = Box<dyn FnMut() -> Result<Settings, String>>;
