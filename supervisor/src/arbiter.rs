//! The supervisor's main loop and one handler per event, in the shape of gunicorn's arbiter.
//!
//! The loop is: reap exited workers, handle queued signals, kill silent workers, reconcile the
//! worker set with what it should be, tell systemd, sleep until a signal, a worker message or the
//! next deadline. Everything else hangs off those steps. Every replacement is readiness-gated:
//! a successor is started beside the worker it replaces, and only its READY tells the old one to
//! drain, so the set of accepting workers is never empty while the service runs.

mod lifecycle;

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::signal::*;
use tracing::{debug, error, info, warn};

use crate::pidfile::Pidfile;
use crate::signals::SignalQueue;
use crate::sock::{self, BindAddr, Listener};
use crate::spawn::RunAs;
use crate::systemd;
use crate::table::{ExitReason, Table};

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

/// Why the supervisor could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The kernel's reason.
        source: io::Error,
    },
    /// Systemd passed sockets that cannot be used.
    #[error("cannot adopt the sockets passed by systemd: {0}")]
    Adopt(io::Error),
    /// The pidfile could not be written.
    #[error("pidfile: {0}")]
    Pidfile(io::Error),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(io::Error),
    /// Workers keep dying before they are ready.
    #[error("workers failed to boot {attempts} times in a row (last: {last}); giving up — the worker log lines above say why")]
    BootFailure {
        /// Consecutive failures.
        attempts: u32,
        /// How the last one ended.
        last: String,
    },
}

struct Shutdown {
    fast: bool,
    deadline: Instant,
}

/// The state kept for a reload in progress, to return to if the new workers cannot boot.
struct Previous {
    settings: Settings,
    generation: u64,
    listeners: Vec<Rc<Listener>>,
}

/// The supervisor: listeners, workers and the loop that keeps them in shape.
pub struct Supervisor {
    settings: Settings,
    reload: ReloadFn,
    reopen_logs: Box<dyn FnMut()>,
    listeners: Vec<Rc<Listener>>,
    socket_activated: bool,
    signals: SignalQueue,
    table: Table,
    generation: u64,
    next_generation: u64,
    previous: Option<Previous>,
    target: usize,
    starting: bool,
    shutdown: Option<Shutdown>,
    halt: Option<Error>,
    boot_failures: u32,
    respawn_after: Instant,
    pidfile: Option<Pidfile>,
    last_status: String,
    metrics: crate::metrics::Metrics,
}

impl Supervisor {
    /// Binds (or adopts) the listeners, writes the pidfile and installs signal handlers.
    pub fn new(settings: Settings, reload: ReloadFn) -> Result<Supervisor, Error> {
        apply_umask(settings.umask);
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
            previous: None,
            starting: true,
            shutdown: None,
            halt: None,
            boot_failures: 0,
            respawn_after: Instant::now(),
            pidfile,
            last_status: String::new(),
            metrics: crate::metrics::Metrics::default(),
        })
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

    /// Runs until stopped by a signal (Ok) or until workers cannot boot (Err).
    pub fn run(mut self) -> Result<(), Error> {
        for l in &self.listeners {
            info!(event = "listening", addr = %l.local, systemd = self.socket_activated, "listening on {}", l.local);
        }
        info!(event = "started", pid = std::process::id(), workers = self.target, "supervisor started");
        loop {
            self.reap();
            if let Some(s) = &self.shutdown {
                if self.table.workers.is_empty() {
                    break;
                }
                // SIGKILL was sent at the deadline; a process that still has not gone is stuck
                // in the kernel, and waiting longer would only hang the service manager.
                if Instant::now() > s.deadline + STUCK_GRACE {
                    error!(
                        event = "stuck_workers",
                        count = self.table.workers.len(),
                        "workers did not die after SIGKILL; exiting anyway"
                    );
                    break;
                }
            }
            for sig in self.signals.drain() {
                self.handle_signal(sig);
            }
            self.murder();
            self.manage();
            self.report();
            self.sleep();
        }
        if let Some(pf) = &self.pidfile {
            debug!(path = %pf.path().display(), "removing pidfile");
        }
        match self.halt.take() {
            Some(err) => Err(err),
            None => {
                info!(event = "stopped", "supervisor stopped");
                Ok(())
            }
        }
    }

    // ---- signals -------------------------------------------------------------------------

    fn handle_signal(&mut self, sig: i32) {
        match sig {
            SIGHUP => self.handle_hup(),
            SIGTERM => self.handle_stop(false),
            SIGINT | SIGQUIT => self.handle_stop(true),
            SIGTTIN => self.handle_ttin(),
            SIGTTOU => self.handle_ttou(),
            SIGUSR1 => self.handle_usr1(),
            SIGUSR2 => warn!(
                event = "signal_ignored",
                signal = "USR2",
                "USR2 (binary upgrade) is not supported; ignored"
            ),
            _ => {} // SIGCHLD: reaping happens on every turn of the loop.
        }
    }

    /// HUP: re-read the configuration; if it is good, roll every worker onto it.
    fn handle_hup(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        systemd::reloading();
        info!(event = "reload_requested", "reloading configuration");
        let new = match (self.reload)() {
            Ok(new) => new,
            Err(reason) => return self.reject_reload(&reason),
        };
        let listeners = if self.socket_activated {
            if new.binds != self.settings.binds {
                warn!(event = "bind_ignored", "bind changed, but listeners come from systemd: keeping them");
            }
            self.listeners.clone()
        } else {
            match bind_all(&new.binds, &new, &self.listeners) {
                Ok(l) => l,
                Err(e) => return self.reject_reload(&e.to_string()),
            }
        };
        if new.pidfile != self.settings.pidfile {
            match new.pidfile.as_deref().map(Pidfile::create).transpose() {
                Ok(pf) => self.pidfile = pf,
                Err(e) => return self.reject_reload(&format!("pidfile: {e}")),
            }
        }
        for l in listeners.iter().filter(|l| !self.listeners.iter().any(|o| Rc::ptr_eq(o, l))) {
            info!(event = "listening", addr = %l.local, "listening on {}", l.local);
        }
        apply_umask(new.umask);
        let old_listeners = std::mem::replace(&mut self.listeners, listeners);
        let old_settings = std::mem::replace(&mut self.settings, new);
        // A reload during a reload keeps the oldest known-good state to fall back on.
        if self.previous.is_none() {
            self.previous = Some(Previous {
                settings: old_settings,
                generation: self.generation,
                listeners: old_listeners,
            });
        }
        self.generation = self.next_generation;
        self.next_generation += 1;
        self.metrics.own.reloads += 1;
        self.target = self.settings.workers.max(1);
        info!(
            event = "reload_started",
            generation = self.generation,
            workers = self.target,
            "configuration accepted; rolling workers"
        );
    }

    fn reject_reload(&mut self, reason: &str) {
        self.metrics.own.reload_failures += 1;
        error!(event = "reload_rejected", reason = %reason, generation = self.generation, "reload rejected: {reason}; the running configuration keeps serving");
        systemd::ready(&self.status_line());
    }

    /// TERM (graceful) or INT/QUIT (fast): stop accepting, let workers finish, exit.
    fn handle_stop(&mut self, fast: bool) {
        if let Some(s) = &self.shutdown {
            if s.fast || !fast {
                return;
            }
        }
        systemd::stopping();
        let grace = if fast { FAST_STOP_GRACE } else { self.settings.graceful_timeout };
        let deadline = Instant::now() + grace;
        info!(event = "stopping", graceful = !fast, grace_ms = grace.as_millis() as u64, "stopping");
        // Closing our copies means the sockets close as soon as the workers drop theirs.
        self.listeners.clear();
        self.previous = None;
        self.shutdown = Some(Shutdown { fast, deadline });
        let signal = if fast { Signal::SIGQUIT } else { Signal::SIGTERM };
        let pids: Vec<Pid> = self.table.workers.keys().copied().collect();
        for pid in pids {
            self.stop_worker(pid, ExitReason::Shutdown, signal, deadline);
        }
    }

    fn handle_ttin(&mut self) {
        self.target += 1;
        info!(event = "scale", workers = self.target, "TTIN: one worker more");
    }

    fn handle_ttou(&mut self) {
        if self.target > 1 {
            self.target -= 1;
            info!(event = "scale", workers = self.target, "TTOU: one worker less");
        } else {
            info!(event = "scale", workers = self.target, "TTOU ignored: at least one worker stays");
        }
    }

    fn handle_usr1(&mut self) {
        (self.reopen_logs)();
        info!(event = "logs_reopened", "reopened log files");
        for pid in self.table.workers.keys() {
            let _ = kill(*pid, Signal::SIGUSR1);
        }
    }

    // ---- reporting and sleeping ----------------------------------------------------------

    /// Tells systemd (and the log) when the service became ready or finished a reload.
    fn report(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        // Recycling successors may be booting at any time under load; they do not make the
        // service less ready, so only the incumbents count.
        let settled = (1..=self.target as u32).all(|slot| {
            self.table.incumbent(slot).is_some_and(|w| w.ready && w.generation == self.generation)
        });
        if settled && self.starting {
            self.starting = false;
            info!(event = "ready", workers = self.target, generation = self.generation, "all workers ready");
            systemd::ready(&self.status_line());
        } else if settled && self.previous.is_some() {
            self.previous = None;
            info!(
                event = "reload_complete",
                generation = self.generation,
                workers = self.target,
                "reload complete"
            );
            systemd::ready(&self.status_line());
        }
        let status = self.status_line();
        if status != self.last_status {
            systemd::status(&status);
            self.last_status = status;
        }
    }

    fn status_line(&self) -> String {
        format!("{} of {} workers serving, generation {}", self.table.serving(), self.target, self.generation)
    }

    /// Sleeps until a signal, a worker message, or the next deadline.
    fn sleep(&mut self) {
        let now = Instant::now();
        let mut wake = now + MAX_TICK;
        for w in self.table.workers.values() {
            wake = wake.min(match w.stop {
                Some(s) if !s.killed => s.deadline,
                Some(_) => now + MAX_TICK,
                None => w.last_seen + self.settings.timeout,
            });
        }
        if self.respawn_after > now {
            wake = wake.min(self.respawn_after);
        }
        let ms = wake.saturating_duration_since(now).as_millis().clamp(1, MAX_TICK.as_millis()) as u16;
        let pids: Vec<Pid> = self.table.workers.values().filter(|w| w.ipc_open).map(|w| w.pid).collect();
        let ready: Vec<(Pid, PollFlags)> = {
            let mut fds = vec![PollFd::new(self.signals.wake_fd(), PollFlags::POLLIN)];
            for pid in &pids {
                let w = &self.table.workers[pid];
                let mut events = PollFlags::POLLIN;
                if !w.outbuf.is_empty() {
                    events |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(w.ipc.as_fd(), events));
            }
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) => {}
                Err(Errno::EINTR) => return,
                Err(e) => {
                    error!(error = %e, "poll failed");
                    std::thread::sleep(Duration::from_millis(ms as u64));
                    return;
                }
            }
            fds[1..]
                .iter()
                .zip(&pids)
                .filter_map(|(fd, pid)| fd.revents().filter(|r| !r.is_empty()).map(|r| (*pid, r)))
                .collect()
        };
        for (pid, events) in ready {
            if events.contains(PollFlags::POLLOUT) {
                self.flush_channel(pid);
            }
            if events.intersects(!PollFlags::POLLOUT) {
                self.read_channel(pid);
            }
        }
    }
}

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

fn apply_umask(mask: Option<u32>) {
    if let Some(m) = mask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m as nix::libc::mode_t));
    }
}
