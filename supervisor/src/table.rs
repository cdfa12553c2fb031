//! The worker table: what the supervisor knows about each worker process.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::ipc::{FrameReader, MetricFamily};

/// Why a worker stopped; one name per cause, used in logs (and later in metrics labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitReason {
    /// Reached its request budget and was replaced.
    Recycle,
    /// Replaced by a worker of a newer configuration.
    Reload,
    /// Removed by TTOU or a reload with fewer workers.
    ScaleDown,
    /// Silent past `timeout`: aborted.
    Timeout,
    /// The whole service is stopping.
    Shutdown,
    /// Exited on its own after having been ready.
    Crash,
    /// Exited before it ever became ready.
    BootFailure,
}

impl ExitReason {
    /// The label used in log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Recycle => "recycle",
            ExitReason::Reload => "reload",
            ExitReason::ScaleDown => "scale_down",
            ExitReason::Timeout => "timeout",
            ExitReason::Shutdown => "shutdown",
            ExitReason::Crash => "crash",
            ExitReason::BootFailure => "boot_failure",
        }
    }
}

/// A stop the supervisor asked for.
#[derive(Debug, Clone, Copy)]
pub struct Stop {
    /// Why.
    pub reason: ExitReason,
    /// When to give up waiting and send SIGKILL.
    pub deadline: Instant,
    /// SIGKILL already sent.
    pub killed: bool,
}

/// One worker process.
#[derive(Debug)]
pub struct Worker {
    /// Its process id.
    pub pid: Pid,
    /// Its place among the workers, 1..=target; a successor shares its predecessor's slot.
    pub slot: u32,
    /// The configuration generation it was started with.
    pub generation: u64,
    /// When it was started.
    pub started: Instant,
    /// Its request budget (jitter included); 0 = never recycled.
    pub max_requests: u64,
    /// The supervisor's end of its channel (non-blocking).
    pub ipc: UnixStream,
    /// False once the channel reached end of file or broke.
    pub ipc_open: bool,
    /// Bytes read from the channel, cut into frames.
    pub reader: FrameReader,
    /// When it last said anything (heartbeats prove it is not stuck).
    pub last_seen: Instant,
    /// It reported READY.
    pub ready: bool,
    /// Requests served, as of its last heartbeat.
    pub requests: u64,
    /// Open connections, as of its last heartbeat.
    pub connections: u64,
    /// Asked to be recycled; a successor will be started.
    pub recycle_wanted: bool,
    /// For a successor still booting: the worker it will replace.
    pub replaces: Option<Pid>,
    /// Set once the supervisor told it to go.
    pub stop: Option<Stop>,
    /// The worker's last metrics snapshot.
    pub metrics: Vec<MetricFamily>,
    /// Frames for the worker not yet written (the channel is non-blocking).
    pub outbuf: Vec<u8>,
}

impl Worker {
    /// Serving and not on its way out.
    pub fn is_serving(&self) -> bool {
        self.ready && self.stop.is_none()
    }
}

/// All live workers, by pid.
#[derive(Debug, Default)]
pub struct Table {
    /// Every worker not yet reaped.
    pub workers: BTreeMap<Pid, Worker>,
}

impl Table {
    /// The worker that holds `slot` (not a successor, not stopping).
    pub fn incumbent(&self, slot: u32) -> Option<&Worker> {
        self.workers.values().find(|w| w.slot == slot && w.stop.is_none() && w.replaces.is_none())
    }

    /// A booting successor of `pid`, if one exists.
    pub fn successor_of(&self, pid: Pid) -> Option<&Worker> {
        self.workers.values().find(|w| w.replaces == Some(pid) && w.stop.is_none())
    }

    /// Workers of `slot` that are not stopping.
    pub fn live_in_slot(&self, slot: u32) -> usize {
        self.workers.values().filter(|w| w.slot == slot && w.stop.is_none()).count()
    }

    /// Successors still booting anywhere.
    pub fn booting_successors(&self) -> usize {
        self.workers.values().filter(|w| w.replaces.is_some() && w.stop.is_none()).count()
    }

    /// Workers serving right now.
    pub fn serving(&self) -> usize {
        self.workers.values().filter(|w| w.is_serving()).count()
    }
}

/// A worker's end in words, for the log line that says why it died.
pub fn describe_status(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with code {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!("killed by {}{}", sig.as_str(), if *core { " (core dumped)" } else { "" })
        }
        other => format!("{other:?}"),
    }
}

/// A SIGKILL nobody here sent is most often the kernel's OOM killer.
pub fn unexplained_kill(status: &WaitStatus, stop: Option<&Stop>) -> bool {
    matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)) && !stop.is_some_and(|s| s.killed)
}
