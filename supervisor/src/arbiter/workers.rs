//! Worker processes: spawning, reaping, replacing, aborting and stopping them — the half of the
//! main loop that acts on processes rather than on signals or messages.
//!
//! `manage` reconciles the worker table with the target (one incumbent per slot, on the current
//! generation); `reap` decides what each exit means; `murder` enforces heartbeats and stop
//! deadlines; `on_ready` is the readiness gate that lets a predecessor drain only once its
//! successor serves.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rand::Rng;
use tracing::{debug, error, info, warn};

use super::phase::StopCause;
use super::{Error, Supervisor, ABORT_GRACE, BOOT_FAILURE_LIMIT};
use crate::ipc::{self, Assignment};
use crate::spawn::{self, SpawnRequest};
use crate::table::{self, ExitReason, Stop, Worker};
use crate::WORKER_BOOT_ERROR;

/// Consecutive boot failures, and when the next spawn may be tried.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    /// Workers that died (or could not be started) before READY, since the last READY.
    pub failures: u32,
    /// No worker is spawned before this instant; `None` when not backing off.
    pub respawn_after: Option<Instant>,
}

impl Supervisor {
    /// Collects every exited worker and decides what its exit means.
    pub(super) fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    error!(error = %e, "waitpid failed");
                    return;
                }
                Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    if let Some(pid) = status.pid() {
                        self.on_exit(pid, status);
                    }
                }
                Ok(_) => continue,
            }
        }
    }

    /// What one worker's exit means: a requested stop, a crash, or a failed boot.
    fn on_exit(&mut self, pid: Pid, status: WaitStatus) {
        if self.reap_upgrade(pid, &status) {
            return;
        }
        // Whatever the worker wrote before it exited (its final metrics) is still buffered in
        // the channel: read it before the worker's state is dropped.
        if self.table.workers.get(&pid).is_some_and(|w| w.ipc_open) {
            self.read_channel(pid);
        }
        let Some(w) = self.table.workers.remove(&pid) else {
            return;
        };
        self.metrics.retire(&w.metrics);
        let reason = match (&w.stop, w.ready) {
            (Some(stop), _) => stop.reason,
            (None, false) => ExitReason::BootFailure,
            (None, true) => ExitReason::Crash,
        };
        let how = table::describe_status(&status);
        let hint = if table::unexplained_kill(&status, w.stop.as_ref()) {
            " (out of memory? see the kernel log)"
        } else {
            ""
        };
        *self.metrics.own.worker_exits.entry(reason).or_default() += 1;
        let clean = matches!(status, WaitStatus::Exited(_, 0));
        let requested = matches!(
            reason,
            ExitReason::Recycle | ExitReason::Reload | ExitReason::ScaleDown | ExitReason::Shutdown
        );
        if requested && clean {
            info!(event = "worker_exited", worker = w.slot, pid = pid.as_raw(), reason = reason.as_str(), status = %how, requests = w.requests, "worker {} (pid {pid}) {how}", w.slot);
        } else {
            error!(event = "worker_exited", worker = w.slot, pid = pid.as_raw(), reason = reason.as_str(), status = %how, requests = w.requests, "worker {} (pid {pid}) {how}{hint}", w.slot);
        }
        // A booting successor whose predecessor died becomes an ordinary worker of the slot.
        for other in self.table.workers.values_mut() {
            if other.replaces == Some(pid) {
                other.replaces = None;
            }
        }
        if !w.ready && !requested {
            let fatal = matches!(status, WaitStatus::Exited(_, code) if code == WORKER_BOOT_ERROR);
            self.on_boot_failure(&w, format!("worker {} {how}", w.slot), fatal);
        }
    }

    /// A worker died before READY: back off, fall back from a reload, or give up.
    fn on_boot_failure(&mut self, w: &Worker, what: String, fatal: bool) {
        self.backoff.failures += 1;
        if self.phase.has_fallback() && w.generation == self.generation {
            return self.abort_reload(&what);
        }
        if self.table.serving() == 0 && (fatal || self.backoff.failures >= BOOT_FAILURE_LIMIT) {
            error!(event = "halt", attempts = self.backoff.failures, "workers cannot boot; stopping");
            return self
                .stop(StopCause::Halt(Error::BootFailure { attempts: self.backoff.failures, last: what }));
        }
        let delay = Duration::from_millis(100 * (1u64 << (self.backoff.failures - 1).min(7)))
            .min(Duration::from_secs(10));
        self.backoff.respawn_after = Some(Instant::now() + delay);
        warn!(
            event = "worker_boot_failed",
            attempt = self.backoff.failures,
            retry_in_ms = delay.as_millis() as u64,
            "{what} before it was ready; retrying in {delay:?}"
        );
    }

    /// Sends `signal` and records the stop; SIGKILL follows at `deadline`.
    pub(super) fn stop_worker(&mut self, pid: Pid, reason: ExitReason, signal: Signal, deadline: Instant) {
        let Some(w) = self.table.workers.get_mut(&pid) else {
            return;
        };
        let deadline = w.stop.map_or(deadline, |s| s.deadline.min(deadline));
        let killed = w.stop.is_some_and(|s| s.killed);
        let reason =
            if reason == ExitReason::Shutdown { reason } else { w.stop.map_or(reason, |s| s.reason) };
        w.stop = Some(Stop { reason, deadline, killed });
        debug!(
            event = "worker_stopping",
            worker = w.slot,
            pid = pid.as_raw(),
            reason = reason.as_str(),
            signal = signal.as_str()
        );
        let _ = kill(pid, signal);
    }

    /// Aborts silent workers and kills those that overstay their stop deadline.
    pub(super) fn murder(&mut self) {
        self.check_upgrade_deadline();
        let now = Instant::now();
        let timeout = self.settings.timeout;
        let mut aborts = Vec::new();
        for w in self.table.workers.values_mut() {
            match &mut w.stop {
                Some(stop) if !stop.killed && now >= stop.deadline => {
                    warn!(
                        event = "worker_killed",
                        worker = w.slot,
                        pid = w.pid.as_raw(),
                        reason = stop.reason.as_str(),
                        "worker {} (pid {}) did not exit in time: SIGKILL",
                        w.slot,
                        w.pid
                    );
                    stop.killed = true;
                    let _ = kill(w.pid, Signal::SIGKILL);
                }
                None if now.duration_since(w.last_seen) > timeout => aborts.push((w.pid, w.slot, w.ready)),
                _ => {}
            }
        }
        for (pid, slot, ready) in aborts {
            let what = if ready { "no heartbeat" } else { "not ready" };
            error!(
                event = "worker_timeout",
                worker = slot,
                pid = pid.as_raw(),
                timeout_ms = timeout.as_millis() as u64,
                "worker {slot} (pid {pid}): {what} for {timeout:?}: SIGABRT"
            );
            self.stop_worker(pid, ExitReason::Timeout, Signal::SIGABRT, now + ABORT_GRACE);
        }
    }

    /// Reconciles the workers with what they should be: one per slot, on the current
    /// generation, recycled when they asked, none beyond the target.
    pub(super) fn manage(&mut self) {
        if self.phase.is_stopping() {
            return;
        }
        let beyond: Vec<Pid> = self
            .table
            .workers
            .values()
            .filter(|w| w.slot as usize > self.target && w.stop.is_none())
            .map(|w| w.pid)
            .collect();
        let deadline = Instant::now() + self.settings.graceful_timeout;
        for pid in beyond {
            self.stop_worker(pid, ExitReason::ScaleDown, Signal::SIGTERM, deadline);
        }
        if self.backoff.respawn_after.is_some_and(|at| Instant::now() < at) {
            return;
        }
        for slot in 1..=self.target as u32 {
            if self.table.live_in_slot(slot) == 0 {
                self.spawn_worker(slot, None);
                continue;
            }
            let Some(inc) = self.table.incumbent(slot) else {
                continue;
            };
            let stale = inc.generation != self.generation;
            if !(stale || inc.recycle_wanted) || self.table.successor_of(inc.pid).is_some() {
                continue;
            }
            // A reload rolls one slot at a time; recycling is never held back.
            if stale && !inc.recycle_wanted && self.table.booting_successors() > 0 {
                continue;
            }
            let pid = inc.pid;
            self.spawn_worker(slot, Some(pid));
        }
    }

    /// Starts a worker for `slot` on the current generation, beside `replaces` if given.
    fn spawn_worker(&mut self, slot: u32, replaces: Option<Pid>) {
        let s = &self.settings;
        let max_requests = match s.max_requests {
            0 => 0,
            n => n + rand::rng().random_range(0..=s.max_requests_jitter),
        };
        let heartbeat = (s.timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(2));
        let request = SpawnRequest {
            program: &s.worker.program,
            args: &s.worker.args,
            listen_fds: self.listeners.iter().map(|l| l.raw_fd()).collect(),
            assignment: Assignment {
                worker_id: slot,
                generation: self.generation,
                max_requests,
                heartbeat_interval_ms: heartbeat.as_millis() as u64,
                payload: s.worker.payload.clone(),
            },
            run_as: s.run_as,
        };
        match spawn::spawn(request) {
            Ok(spawned) => {
                self.metrics.own.worker_starts += 1;
                let pid = spawned.pid;
                info!(
                    event = "worker_spawned",
                    worker = slot,
                    pid = pid.as_raw(),
                    generation = self.generation,
                    max_requests,
                    replaces = replaces.map(|p| p.as_raw()),
                    "spawned worker {slot} (pid {pid})"
                );
                let now = Instant::now();
                self.table.workers.insert(
                    pid,
                    Worker {
                        pid,
                        slot,
                        generation: self.generation,
                        started: now,
                        max_requests,
                        ipc: spawned.ipc,
                        ipc_open: true,
                        reader: ipc::FrameReader::default(),
                        last_seen: now,
                        ready: false,
                        requests: 0,
                        connections: 0,
                        recycle_wanted: false,
                        replaces,
                        stop: None,
                        metrics: Vec::new(),
                        outbuf: Vec::new(),
                    },
                );
            }
            Err(e) => {
                error!(event = "spawn_failed", worker = slot, error = %e, "cannot start worker {slot}: {e}");
                self.backoff.failures += 1;
                if self.backoff.failures >= BOOT_FAILURE_LIMIT && self.table.serving() == 0 {
                    self.stop(StopCause::Halt(Error::BootFailure {
                        attempts: self.backoff.failures,
                        last: format!("spawn failed: {e}"),
                    }));
                } else {
                    self.backoff.respawn_after = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }

    /// A worker said READY: it may now serve, and the worker it replaces (if any) drains.
    pub(super) fn on_ready(&mut self, pid: Pid) {
        let Some(w) = self.table.workers.get_mut(&pid) else {
            return;
        };
        if w.ready {
            return;
        }
        w.ready = true;
        self.backoff.failures = 0;
        info!(
            event = "worker_ready",
            worker = w.slot,
            pid = pid.as_raw(),
            generation = w.generation,
            "worker {} (pid {pid}) ready",
            w.slot
        );
        if let Some(old) = w.replaces.take() {
            let reason = match self.table.workers.get(&old) {
                Some(o) if o.generation != self.generation => ExitReason::Reload,
                _ => ExitReason::Recycle,
            };
            let deadline = Instant::now() + self.settings.graceful_timeout + Duration::from_secs(1);
            self.stop_worker(old, reason, Signal::SIGTERM, deadline);
        }
    }
}
