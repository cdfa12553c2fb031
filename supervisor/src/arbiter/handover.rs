//! The binary upgrade (USR2) as the arbiter sees it, on both sides of the handover.
//!
//! Old supervisor: USR2 moves the pidfile to `<pidfile>.oldbin` and starts the binary at its
//! path ([`crate::upgrade::start`]). Then one of three things happens:
//! - the new one writes READY on the channel: the old one tells systemd the new pid
//!   (`MAINPID=`), leaves the Unix socket files to it and drains as on TERM, but without
//!   `STOPPING=1` (the service is not stopping, only this process);
//! - the new one exits first (bad binary, bad config, workers that cannot boot): `upgrade_failed`
//!   with its exit status, the pidfile moves back, nothing else changes;
//! - it says nothing for `2 × timeout + 5 s`: SIGKILL, then the same as an exit.
//!
//! New supervisor: it adopts the sockets like systemd's; once every worker is ready it sends
//! `MAINPID=<own pid>` with `READY=1` and writes READY to the old one.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tracing::{error, info, warn};

use super::handlers::Outcome;
use super::phase::StopCause;
use super::Supervisor;
use crate::control::socket::ControlSocket;
use crate::table;
use crate::{sock, systemd, upgrade};

/// Extra time a new supervisor gets beyond twice the worker timeout to say READY.
const UPGRADE_MARGIN: Duration = Duration::from_secs(5);

impl Supervisor {
    /// USR2: start the binary at its path again; it takes over once it serves.
    pub(super) fn handle_usr2(&mut self) -> Outcome {
        let refuse = |why: &str| {
            warn!(event = "upgrade_refused", reason = why, "USR2 ignored: {why}");
            Err(format!("upgrade refused: {why}"))
        };
        if self.phase.is_stopping() {
            return refuse("the supervisor is stopping");
        }
        if let Some(u) = &self.upgrade {
            return refuse(&format!("an upgrade to pid {} is already in flight", u.pid));
        }
        if self.predecessor.is_some() {
            return refuse("this supervisor is itself an upgrade that is not ready yet");
        }
        let Some(successor) = self.successor.clone() else {
            return refuse("the path of this binary could not be resolved at start");
        };
        let original = self.pidfile.as_ref().map(|pf| pf.path().to_path_buf());
        if let (Some(pf), Some(path)) = (self.pidfile.as_mut(), original.as_deref()) {
            if let Err(e) = pf.rename(&upgrade::oldbin(path)) {
                return refuse(&format!("cannot move the pidfile {} aside: {e}", path.display()));
            }
        }
        let fds: Vec<_> = self.listeners.iter().map(|l| l.raw_fd()).collect();
        let deadline = Instant::now() + self.settings.timeout * 2 + UPGRADE_MARGIN;
        match upgrade::start(&successor, &fds, deadline) {
            Ok(inflight) => {
                info!(
                    event = "upgrade_started",
                    new_pid = inflight.pid.as_raw(),
                    program = %successor.program.display(),
                    "USR2: started {} (pid {}); this supervisor serves until it is ready",
                    successor.program.display(),
                    inflight.pid
                );
                let message = format!(
                    "upgrade started: {} is pid {}; it takes over once its workers are ready (this supervisor serves until then, and on if it fails)",
                    successor.program.display(),
                    inflight.pid
                );
                self.upgrade = Some(inflight);
                Ok(message)
            }
            Err(e) => {
                let what = format!("cannot start {}: {e}", successor.program.display());
                self.upgrade_failed(None, &what);
                Err(format!("upgrade failed: {what}"))
            }
        }
    }

    /// The new supervisor wrote on the channel: hand over if it said READY.
    pub(super) fn read_upgrade(&mut self) {
        let Some(u) = self.upgrade.as_mut() else {
            return;
        };
        if !u.read() {
            return;
        }
        let new = u.pid;
        self.upgrade = None;
        info!(
            event = "upgrade_handover",
            new_pid = new.as_raw(),
            "the new supervisor (pid {new}) is ready; this one drains and exits"
        );
        systemd::main_pid(new.as_raw() as u32);
        sock::keep_socket_files();
        self.handed_over = true;
        self.stop(StopCause::Graceful);
    }

    /// Whether `pid` was the new supervisor of an upgrade in flight; if so, the upgrade failed.
    pub(super) fn reap_upgrade(&mut self, pid: Pid, status: &WaitStatus) -> bool {
        if self.upgrade.as_ref().is_none_or(|u| u.pid != pid) {
            return false;
        }
        // It may have said READY just before it exited: that is still no one to hand over to.
        self.upgrade_failed(Some(pid), &format!("the new supervisor {}", table::describe_status(status)));
        true
    }

    /// Kills a new supervisor that has not said READY by its deadline (its exit is then reaped
    /// as a failed upgrade).
    pub(super) fn check_upgrade_deadline(&mut self) {
        let Some(u) = self.upgrade.as_mut() else {
            return;
        };
        if Instant::now() >= u.deadline {
            error!(
                event = "upgrade_timeout",
                new_pid = u.pid.as_raw(),
                "the new supervisor (pid {}) was not ready in time: SIGKILL",
                u.pid
            );
            let _ = kill(u.pid, Signal::SIGKILL);
            u.deadline = Instant::now() + Duration::from_secs(3600);
        }
    }

    /// The upgrade did not happen: say why, put the pidfile back, keep serving.
    fn upgrade_failed(&mut self, pid: Option<Pid>, what: &str) {
        self.upgrade = None;
        if let (Some(pf), Some(path)) = (self.pidfile.as_mut(), self.settings.pidfile.as_deref()) {
            if let Err(e) = pf.rename(path) {
                error!(event = "pidfile_restore_failed", error = %e, "cannot move the pidfile back to {}: {e}", path.display());
            }
        }
        error!(
            event = "upgrade_failed",
            new_pid = pid.map(|p| p.as_raw()),
            status = %what,
            "upgrade failed: {what}; this supervisor keeps serving (the lines above from the new binary say why)"
        );
    }

    /// The first READY of a supervisor started by an upgrade: it becomes the service's main
    /// process and tells the old one to go. True if this supervisor was such an upgrade.
    pub(super) fn announce_upgrade_ready(&mut self) -> bool {
        let Some(old) = self.predecessor.take() else {
            return false;
        };
        // The control socket moves to this supervisor before the old one is told to go, so
        // `ctl` always finds one that answers.
        if let Some(path) = self.control_pending.take() {
            match ControlSocket::open(&path, true) {
                Ok(c) => self.control = Some(c),
                Err(e) => {
                    error!(event = "control_socket_failed", error = %e, "control socket {e}; `ctl` cannot reach this supervisor")
                }
            }
        }
        systemd::ready_as_main(&self.status_line());
        let pid = old.pid;
        match old.ready() {
            Ok(()) => info!(
                event = "upgrade_ready",
                old_pid = pid.as_raw(),
                "ready; the old supervisor (pid {pid}) drains"
            ),
            // It is gone already; there is nobody to take over from, and nothing else to do.
            Err(e) => {
                warn!(event = "upgrade_ready", old_pid = pid.as_raw(), error = %e, "ready, but the old supervisor (pid {pid}) cannot be told: {e}")
            }
        }
        true
    }
}
