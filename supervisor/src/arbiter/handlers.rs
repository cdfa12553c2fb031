//! One handler per signal: anyone looking for "what does HUP do" finds one function here.
//!
//! The signal queue ([`crate::signals`]) decides how often each handler runs: once per TTIN or
//! TTOU received, once per drain for the others (merging them is harmless; the queue says why).
//! Handlers change the supervisor's intent (target, settings, phase); the loop's next steps
//! (`manage`, `report`) turn that into processes. The control socket runs the same handlers
//! (`ctl reload` is `handle_hup`, …): each returns an [`Outcome`] that `ctl` is answered with
//! and a signal ignores (the log has said it already).

use std::rc::Rc;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::signal::*;
use tracing::{error, info, warn};

use super::phase::{Previous, StopCause};
use super::{apply_umask, bind_all, Supervisor, FAST_STOP_GRACE};
use crate::pidfile::Pidfile;
use crate::systemd;
use crate::table::ExitReason;

/// What a handler made of a request: accepted (what happens now, in words) or refused (why).
pub(super) type Outcome = Result<String, String>;

impl Supervisor {
    /// Runs the handler of one queued signal.
    pub(super) fn handle_signal(&mut self, sig: i32) {
        // The outcomes are logged by the handlers; a signal has nobody to answer.
        let _ = match sig {
            SIGHUP => self.handle_hup(),
            SIGTERM => self.handle_stop(false),
            SIGINT | SIGQUIT => self.handle_stop(true),
            SIGTTIN => self.handle_ttin(),
            SIGTTOU => self.handle_ttou(),
            SIGUSR1 => self.handle_usr1(),
            SIGUSR2 => self.handle_usr2(),
            _ => Ok(String::new()), // SIGCHLD: reaping happens on every turn of the loop.
        };
    }

    /// HUP: re-read the configuration; if it is good, roll every worker onto it.
    pub(super) fn handle_hup(&mut self) -> Outcome {
        if self.phase.is_stopping() {
            return Err("the supervisor is stopping".into());
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
        self.phase.begin_reload(Previous {
            settings: old_settings,
            generation: self.generation,
            listeners: old_listeners,
        });
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
        Ok(format!(
            "configuration accepted: rolling {} workers onto generation {}",
            self.target, self.generation
        ))
    }

    /// A HUP whose configuration cannot be used: say why; the running one keeps serving.
    fn reject_reload(&mut self, reason: &str) -> Outcome {
        self.metrics.own.reload_failures += 1;
        error!(event = "reload_rejected", reason = %reason, generation = self.generation, "reload rejected: {reason}; the running configuration keeps serving");
        systemd::ready(&self.status_line());
        Err(format!("reload rejected: {reason}; the running configuration keeps serving"))
    }

    /// New workers of a reload cannot boot: return to the configuration that worked.
    pub(super) fn abort_reload(&mut self, why: &str) {
        let Some(prev) = self.phase.take_fallback() else {
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

    /// TERM (graceful) or INT/QUIT (fast).
    pub(super) fn handle_stop(&mut self, fast: bool) -> Outcome {
        self.stop(if fast { StopCause::Fast } else { StopCause::Graceful });
        let grace = if fast { FAST_STOP_GRACE } else { self.settings.graceful_timeout };
        Ok(format!("stopping: workers finish their requests within {grace:?}, then the supervisor exits"))
    }

    /// TERM (graceful), INT/QUIT (fast) or a halt: stop accepting, let workers finish, exit.
    pub(super) fn stop(&mut self, cause: StopCause) {
        if !self.phase.escalates(&cause) {
            // Already stopping at least as fast; a halt still decides how the process exits.
            if let (StopCause::Halt(_), Some(deadline)) = (&cause, self.phase.stop_deadline()) {
                self.phase.stop(cause, deadline);
            }
            return;
        }
        let fast = cause.is_fast();
        // After an upgrade's handover the service goes on in the new supervisor.
        if !self.handed_over {
            systemd::stopping();
        }
        let grace = if fast { FAST_STOP_GRACE } else { self.settings.graceful_timeout };
        let deadline = Instant::now() + grace;
        info!(event = "stopping", graceful = !fast, grace_ms = grace.as_millis() as u64, "stopping");
        // Closing our copies means the sockets close as soon as the workers drop theirs.
        self.listeners.clear();
        self.phase.stop(cause, deadline);
        let signal = if fast { Signal::SIGQUIT } else { Signal::SIGTERM };
        let pids: Vec<Pid> = self.table.workers.keys().copied().collect();
        for pid in pids {
            self.stop_worker(pid, ExitReason::Shutdown, signal, deadline);
        }
    }

    /// TTIN: one worker more.
    pub(super) fn handle_ttin(&mut self) -> Outcome {
        if self.phase.is_stopping() {
            return Err("the supervisor is stopping".into());
        }
        self.target += 1;
        info!(event = "scale", workers = self.target, "TTIN: one worker more");
        Ok(format!("one worker more: {} workers", self.target))
    }

    /// TTOU: one worker fewer, never none.
    pub(super) fn handle_ttou(&mut self) -> Outcome {
        if self.phase.is_stopping() {
            return Err("the supervisor is stopping".into());
        }
        if self.target > 1 {
            self.target -= 1;
            info!(event = "scale", workers = self.target, "TTOU: one worker less");
            Ok(format!("one worker fewer: {} workers", self.target))
        } else {
            info!(event = "scale", workers = self.target, "TTOU ignored: at least one worker stays");
            Err("at least one worker stays".into())
        }
    }

    /// USR1: reopen the supervisor's log files and tell every worker to do the same.
    fn handle_usr1(&mut self) -> Outcome {
        (self.reopen_logs)();
        info!(event = "logs_reopened", "reopened log files");
        for pid in self.table.workers.keys() {
            let _ = kill(*pid, Signal::SIGUSR1);
        }
        Ok("reopened log files".into())
    }
}
