//! The arbiter: the supervisor's state and the loop that keeps the workers in shape, in the shape
//! of gunicorn's arbiter.
//!
//! The loop ([`run`]) is: reap exited workers, handle queued signals, kill silent workers,
//! reconcile the worker set with what it should be, tell systemd, sleep until a signal, a worker
//! message or the next deadline. Everything else hangs off those steps. Every replacement is
//! readiness-gated: a successor is started beside the worker it replaces, and only its READY tells
//! the old one to drain, so the set of accepting workers is never empty while the service runs.
//!
//! Where things live:
//! - this file: the [`Supervisor`] itself, how it is built, and the listener helpers a start and
//!   a reload share;
//! - [`settings`]: what the supervisor runs ([`Settings`], [`WorkerSpec`]) and [`ReloadFn`];
//! - [`error`]: why it could not start or had to stop ([`Error`]);
//! - [`phase`]: its phases (starting, running, reloading, stopping, halting) as one enum;
//! - [`run`]: the main loop, the report to systemd and the sleep;
//! - [`handlers`]: one handler per signal (`handle_hup`, `handle_ttin`, …);
//! - [`workers`]: spawning, reaping, replacing, aborting and stopping worker processes;
//! - [`channel`]: the private channel to each worker (reading, writing, routing messages);
//! - [`handover`]: the binary upgrade (USR2) on both sides, old and new supervisor;
//! - [`control`]: the control socket's requests, run by the same handlers as the signals, and
//!   the status they report (also in the process title).

mod channel;
mod control;
mod error;
mod handlers;
mod handover;
mod phase;
mod run;
mod settings;
mod workers;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use error::Error;
pub use settings::{ReloadFn, Settings, WorkerSpec};

use crate::control::socket::ControlSocket;
use crate::metrics::Metrics;
use crate::pidfile::Pidfile;
use crate::signals::SignalQueue;
use crate::sock::{self, BindAddr, Listener};
use crate::table::Table;
use crate::upgrade::{InFlight, Predecessor, Successor};
use phase::Phase;
use workers::Backoff;

/// Consecutive failed boots after which the supervisor gives up (when nothing is serving).
const BOOT_FAILURE_LIMIT: u32 = 5;
/// How long an aborted (SIGABRT) worker has to die before SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// How long a fast stop (INT/QUIT) waits before SIGKILL.
const FAST_STOP_GRACE: Duration = Duration::from_secs(1);
/// Longest sleep of the main loop; deadlines shorten it.
const MAX_TICK: Duration = Duration::from_secs(1);
/// How long after the stop deadline the supervisor waits for killed workers to be reaped.
const STUCK_GRACE: Duration = Duration::from_secs(5);

/// The supervisor: listeners, workers and the loop that keeps them in shape.
pub struct Supervisor {
    /// What runs now (a reload replaces it; [`Phase::Reloading`] keeps the one before).
    settings: Settings,
    /// Re-reads the configuration on HUP.
    reload: ReloadFn,
    /// What USR1 does in the supervisor itself.
    reopen_logs: Box<dyn FnMut()>,
    /// The listeners workers inherit; emptied when stopping, so the sockets close with the
    /// last worker.
    listeners: Vec<Rc<Listener>>,
    /// The listeners came from systemd (`LISTEN_FDS`): a reload never rebinds.
    socket_activated: bool,
    /// Signals received and not yet handled.
    signals: SignalQueue,
    /// Every live worker process.
    table: Table,
    /// The configuration generation new workers are started with.
    generation: u64,
    /// The generation the next accepted reload gets (never reused, even after a fallback).
    next_generation: u64,
    /// How many worker slots there should be (settings, then TTIN/TTOU).
    target: usize,
    /// Starting, running, reloading or stopping.
    phase: Phase,
    /// Consecutive boot failures and the back-off they impose.
    backoff: Backoff,
    /// The pidfile, removed when dropped.
    pidfile: Option<Pidfile>,
    /// The last STATUS sent to systemd, so only changes are sent.
    last_status: String,
    /// The supervisor's own figures and the metrics of exited workers.
    metrics: Metrics,
    /// The binary USR2 starts again (resolved at start, so a replaced file is found).
    successor: Option<Successor>,
    /// A new supervisor started by USR2 that has not said READY yet.
    upgrade: Option<InFlight>,
    /// When this supervisor was started by an upgrade: the old one, told once we are ready.
    predecessor: Option<Predecessor>,
    /// This supervisor handed the service to a new one and is draining out.
    handed_over: bool,
    /// The program's name and version, for process titles and `ctl status`.
    identity: Identity,
    /// When this supervisor started.
    started: Instant,
    /// The control socket, once open.
    control: Option<ControlSocket>,
    /// Where the control socket goes, for a supervisor started by an upgrade: it takes the path
    /// over from the old one once it is ready, not before (if it never gets ready, the old one
    /// keeps answering there).
    control_pending: Option<PathBuf>,
    /// The process title last set.
    title: String,
}

/// The name and version of the program the supervisor runs, as `ps` and `ctl status` show them.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// The program's name (`awswhitelist`).
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
}

impl Supervisor {
    /// Binds (or adopts) the listeners, writes the pidfile and installs signal handlers.
    pub fn new(settings: Settings, reload: ReloadFn) -> Result<Supervisor, Error> {
        apply_umask(settings.umask);
        let predecessor = Predecessor::from_env();
        let (listeners, socket_activated) = match sock::adopt_systemd_listeners().map_err(Error::Adopt)? {
            Some(adopted) => (adopted.into_iter().map(Rc::new).collect(), true),
            None => (bind_all(&settings.binds, &settings, &[])?, false),
        };
        let pidfile = match &settings.pidfile {
            Some(path) => Some(Pidfile::create(path).map_err(Error::Pidfile)?),
            None => None,
        };
        let signals = SignalQueue::install().map_err(Error::Signals)?;
        Ok(Supervisor {
            target: settings.workers.max(1),
            settings,
            reload,
            reopen_logs: Box::new(|| {}),
            listeners,
            socket_activated,
            signals,
            table: Table::default(),
            generation: 1,
            next_generation: 2,
            phase: Phase::Starting { reload: None },
            backoff: Backoff::default(),
            pidfile,
            last_status: String::new(),
            metrics: Metrics::default(),
            successor: Successor::current(),
            upgrade: None,
            predecessor,
            handed_over: false,
            identity: Identity { name: env!("CARGO_PKG_NAME"), version: env!("CARGO_PKG_VERSION") },
            started: Instant::now(),
            control: None,
            control_pending: None,
            title: String::new(),
        })
    }

    /// Names the program in process titles and `ctl status`.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// Listens for `ctl` on a Unix socket at `path` (mode 0600, this uid and root only). A
    /// supervisor started by an upgrade takes the path over once it is ready.
    pub fn control_socket(mut self, path: PathBuf) -> Result<Self, Error> {
        if self.predecessor.is_some() {
            self.control_pending = Some(path);
        } else {
            self.control = Some(ControlSocket::open(&path, false).map_err(Error::Control)?);
        }
        Ok(self)
    }

    /// Sets what USR1 does in the supervisor besides forwarding it to workers.
    pub fn on_reopen_logs(mut self, f: impl FnMut() + 'static) -> Self {
        self.reopen_logs = Box::new(f);
        self
    }

    /// The addresses actually listened on (real ports when port 0 was configured).
    pub fn local_addrs(&self) -> Vec<String> {
        self.listeners.iter().map(|l| l.local.clone()).collect()
    }
}

/// The listeners for `binds`, reusing those of `existing` that are already bound to the same
/// address, so a reload never closes a socket that keeps its address (and its queue).
fn bind_all(binds: &[BindAddr], s: &Settings, existing: &[Rc<Listener>]) -> Result<Vec<Rc<Listener>>, Error> {
    binds
        .iter()
        .map(|addr| match existing.iter().find(|l| l.configured == *addr) {
            Some(l) => Ok(l.clone()),
            None => Listener::bind(addr, s.backlog, s.reuse_port)
                .map(Rc::new)
                .map_err(|source| Error::Bind { addr: addr.to_string(), source }),
        })
        .collect()
}

/// Sets the process umask (inherited by workers spawned from now on), if one is configured.
fn apply_umask(mask: Option<u32>) {
    if let Some(m) = mask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m as nix::libc::mode_t));
    }
}
