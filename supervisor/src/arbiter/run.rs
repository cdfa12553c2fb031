//! The main loop: a handful of steps repeated until the service has stopped, plus the steps
//! that are not about one worker — telling systemd (and the process title) how the service is,
//! and sleeping until the next thing to do: a signal, a worker message, a `ctl` request or a
//! deadline.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;
use tracing::{debug, error, info};

use super::phase::Settled;
use super::{Error, Supervisor, MAX_TICK, STUCK_GRACE};
use crate::systemd;

impl Supervisor {
    /// Runs until stopped by a signal (Ok) or until workers cannot boot (Err).
    pub fn run(mut self) -> Result<(), Error> {
        for l in &self.listeners {
            info!(event = "listening", addr = %l.local, systemd = self.socket_activated, "listening on {}", l.local);
        }
        info!(event = "started", pid = std::process::id(), workers = self.target, "supervisor started");
        if let Some(c) = &self.control {
            info!(event = "control_socket", path = %c.path().display(), "ctl listens on {}", c.path().display());
        }
        loop {
            self.reap();
            if let Some(deadline) = self.phase.stop_deadline() {
                if self.table.workers.is_empty() {
                    break;
                }
                // SIGKILL was sent at the deadline; a process that still has not gone is stuck
                // in the kernel, and waiting longer would only hang the service manager.
                if Instant::now() > deadline + STUCK_GRACE {
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
            self.update_title();
            self.sleep();
        }
        if let Some(pf) = &self.pidfile {
            debug!(path = %pf.path().display(), "removing pidfile");
        }
        // Gone before "stopped" is said: whoever reads that finds no socket left to ask.
        self.control = None;
        let outcome = self.phase.outcome();
        if outcome.is_ok() {
            info!(event = "stopped", "supervisor stopped");
        }
        outcome
    }

    /// Tells systemd (and the log) when the service became ready or finished a reload.
    fn report(&mut self) {
        if self.phase.is_stopping() {
            return;
        }
        // Recycling successors may be booting at any time under load; they do not make the
        // service less ready, so only the incumbents count.
        let settled = (1..=self.target as u32).all(|slot| {
            self.table.incumbent(slot).is_some_and(|w| w.ready && w.generation == self.generation)
        });
        let settled = settled.then(|| self.phase.settle()).flatten();
        // The title first: whoever learns of the new state from systemd or the log finds it
        // in `ps` too.
        self.update_title();
        match settled {
            Some(Settled::Ready) => {
                info!(
                    event = "ready",
                    workers = self.target,
                    generation = self.generation,
                    "all workers ready"
                );
                if !self.announce_upgrade_ready() {
                    systemd::ready(&self.status_line());
                }
            }
            Some(Settled::ReloadComplete) => {
                info!(
                    event = "reload_complete",
                    generation = self.generation,
                    workers = self.target,
                    "reload complete"
                );
                systemd::ready(&self.status_line());
            }
            None => {}
        }
        let status = self.status_line();
        if status != self.last_status {
            systemd::status(&status);
            self.last_status = status;
        }
    }

    /// The one-line state for `systemctl status` and READY notifications.
    pub(super) fn status_line(&self) -> String {
        format!("{} of {} workers serving, generation {}", self.table.serving(), self.target, self.generation)
    }

    /// Sleeps until a signal, a worker message, a `ctl` request, or the next deadline.
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
        if let Some(at) = self.backoff.respawn_after.filter(|at| *at > now) {
            wake = wake.min(at);
        }
        if let Some(u) = &self.upgrade {
            wake = wake.min(u.deadline);
        }
        if let Some(at) = self.control.as_ref().and_then(|c| c.next_deadline()) {
            wake = wake.min(at);
        }
        let ms = wake.saturating_duration_since(now).as_millis().clamp(1, MAX_TICK.as_millis()) as u16;
        let pids: Vec<Pid> = self.table.workers.values().filter(|w| w.ipc_open).map(|w| w.pid).collect();
        let upgrade_ready;
        let control_events: Vec<PollFlags>;
        let ready: Vec<(Pid, PollFlags)> = {
            // The signal socket, the upgrade channel (if any), the control socket and its
            // clients (if any), then the workers' channels.
            let mut fds = vec![PollFd::new(self.signals.wake_fd(), PollFlags::POLLIN)];
            let upgrade_fd = self.upgrade.as_ref().and_then(|u| u.fd());
            if let Some(fd) = upgrade_fd {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            let control_at = fds.len();
            fds.extend(self.control.as_ref().map(|c| c.poll_fds()).unwrap_or_default());
            let workers_at = fds.len();
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
            let revents = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
            upgrade_ready = control_at == 2 && !revents(&fds[1]).is_empty();
            control_events = fds[control_at..workers_at].iter().map(revents).collect();
            fds[workers_at..]
                .iter()
                .zip(&pids)
                .filter_map(|(fd, pid)| Some(revents(fd)).filter(|r| !r.is_empty()).map(|r| (*pid, r)))
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
        if upgrade_ready {
            self.read_upgrade();
        }
        if let Some(control) = self.control.as_mut() {
            let incoming = if control_events.iter().any(|r| !r.is_empty()) {
                control.on_events(&control_events)
            } else {
                Vec::new()
            };
            control.expire(Instant::now());
            self.on_control(incoming);
        }
    }
}
