//! Worker lifecycle for the arbiter: reaping, spawning, replacing, aborting — the half of the
//! main loop that acts on processes rather than on signals.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rand::Rng;
use tracing::{debug, error, info, warn};

use super::{apply_umask, Error, Supervisor, ABORT_GRACE, BOOT_FAILURE_LIMIT};
use crate::ipc::{self, Assignment, SupervisorMessage, WorkerMessage};
use crate::spawn::{self, SpawnRequest};
use crate::table::{self, ExitReason, Stop, Worker};
use crate::{systemd, WORKER_BOOT_ERROR};

/// Pending output per worker beyond which further messages are dropped.
const OUTBUF_LIMIT: usize = 4 * ipc::MAX_FRAME;

impl Supervisor {
    // ---- workers -------------------------------------------------------------------------

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

    pub(super) fn on_exit(&mut self, pid: Pid, status: WaitStatus) {
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

    pub(super) fn on_boot_failure(&mut self, w: &Worker, what: String, fatal: bool) {
        self.boot_failures += 1;
        if self.previous.is_some() && w.generation == self.generation {
            return self.abort_reload(&what);
        }
        if self.table.serving() == 0 && (fatal || self.boot_failures >= BOOT_FAILURE_LIMIT) {
            error!(event = "halt", attempts = self.boot_failures, "workers cannot boot; stopping");
            self.halt = Some(Error::BootFailure { attempts: self.boot_failures, last: what });
            return self.handle_stop(true);
        }
        let delay = Duration::from_millis(100 * (1u64 << (self.boot_failures - 1).min(7)))
            .min(Duration::from_secs(10));
        self.respawn_after = Instant::now() + delay;
        warn!(
            event = "worker_boot_failed",
            attempt = self.boot_failures,
            retry_in_ms = delay.as_millis() as u64,
            "{what} before it was ready; retrying in {delay:?}"
        );
    }

    /// New workers of a reload cannot boot: return to the configuration that worked.
    pub(super) fn abort_reload(&mut self, why: &str) {
        let Some(prev) = self.previous.take() else {
            return;
        };
        self.metrics.own.reload_failures += 1;
        error!(event = "reload_failed", reason = %why, generation = self.generation, restored_generation = prev.generation, "reload failed: {why}; keeping the previous configuration");
        self.settings = prev.settings;
        self.listeners = prev.listeners;
        self.generation = prev.generation;
        self.target = self.settings.workers.max(1);
        apply_umask(self.settings.umask);
        systemd::ready(&self.status_line());
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
        if self.shutdown.is_some() {
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
        if Instant::now() < self.respawn_after {
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

    pub(super) fn spawn_worker(&mut self, slot: u32, replaces: Option<Pid>) {
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
                self.boot_failures += 1;
                if self.boot_failures >= BOOT_FAILURE_LIMIT && self.table.serving() == 0 {
                    self.halt = Some(Error::BootFailure {
                        attempts: self.boot_failures,
                        last: format!("spawn failed: {e}"),
                    });
                    self.handle_stop(true);
                } else {
                    self.respawn_after = Instant::now() + Duration::from_secs(1);
                }
            }
        }
    }

    // ---- messages ------------------------------------------------------------------------

    pub(super) fn on_message(&mut self, pid: Pid, msg: WorkerMessage) {
        let Some(w) = self.table.workers.get_mut(&pid) else {
            return;
        };
        w.last_seen = Instant::now();
        match msg {
            WorkerMessage::Heartbeat { requests, connections } => {
                w.requests = requests;
                w.connections = connections;
            }
            WorkerMessage::Recycle { requests } => {
                w.requests = requests;
                if !w.recycle_wanted && w.stop.is_none() {
                    w.recycle_wanted = true;
                    info!(
                        event = "worker_recycle",
                        worker = w.slot,
                        pid = pid.as_raw(),
                        requests,
                        max_requests = w.max_requests,
                        "worker {} (pid {pid}) served {requests} requests: recycling",
                        w.slot
                    );
                }
            }
            WorkerMessage::Ready => self.on_ready(pid),
            WorkerMessage::Metrics { families } => w.metrics = families,
            WorkerMessage::MetricsRequest { id } => {
                let text = self.metrics_text();
                self.send(pid, &SupervisorMessage::MetricsText { id, text });
            }
        }
    }

    /// The merged metrics of the whole service.
    pub(super) fn metrics_text(&self) -> String {
        let live = self.table.workers.values().map(|w| w.metrics.as_slice());
        self.metrics.render(live, self.table.workers.len(), self.generation)
    }

    /// Queues a message for a worker and writes what the channel takes now; the rest goes out
    /// when poll says the channel is writable, so a slow worker never blocks the supervisor.
    pub(super) fn send(&mut self, pid: Pid, msg: &SupervisorMessage) {
        let Some(w) = self.table.workers.get_mut(&pid) else {
            return;
        };
        if !w.ipc_open {
            return;
        }
        if w.outbuf.len() > OUTBUF_LIMIT {
            warn!(
                worker = w.slot,
                pid = pid.as_raw(),
                "worker is not reading its channel; dropping a message"
            );
            return;
        }
        w.outbuf.extend_from_slice(&ipc::encode(msg));
        self.flush_channel(pid);
    }

    /// Writes as much of a worker's pending output as the channel accepts without blocking.
    pub(super) fn flush_channel(&mut self, pid: Pid) {
        let Some(w) = self.table.workers.get_mut(&pid) else {
            return;
        };
        while !w.outbuf.is_empty() {
            match (&w.ipc).write(&w.outbuf) {
                Ok(0) => break,
                Ok(n) => {
                    w.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The worker is gone or closing; reaping will tell why.
                    w.outbuf.clear();
                    break;
                }
            }
        }
    }

    pub(super) fn on_ready(&mut self, pid: Pid) {
        let Some(w) = self.table.workers.get_mut(&pid) else {
            return;
        };
        if w.ready {
            return;
        }
        w.ready = true;
        self.boot_failures = 0;
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

    pub(super) fn read_channel(&mut self, pid: Pid) {
        let mut messages = Vec::new();
        let Some(w) = self.table.workers.get_mut(&pid) else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match (&w.ipc).read(&mut buf) {
                Ok(0) => {
                    w.ipc_open = false;
                    break;
                }
                Ok(n) => w.reader.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    w.ipc_open = false;
                    break;
                }
            }
        }
        loop {
            match w.reader.next_frame() {
                Ok(Some(body)) => match ipc::decode::<WorkerMessage>(&body) {
                    Ok(msg) => messages.push(msg),
                    Err(e) => {
                        warn!(worker = w.slot, pid = pid.as_raw(), error = %e, "ignoring a message from worker")
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    // The stream is out of step and cannot be resynchronised; the worker's
                    // heartbeats stop reaching us, so the timeout replaces it.
                    error!(worker = w.slot, pid = pid.as_raw(), error = %e, "closing a corrupt worker channel");
                    w.ipc_open = false;
                    break;
                }
            }
        }
        for msg in messages {
            self.on_message(pid, msg);
        }
    }
}
