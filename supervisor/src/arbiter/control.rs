//! The control socket as the arbiter sees it: each request runs the handler of the signal it
//! stands for (`reload` is HUP's, `add-worker` TTIN's, `remove-worker` TTOU's, `upgrade` USR2's,
//! `stop` TERM's or INT's) and is answered with that handler's outcome; `status` and `workers`
//! read the worker table. The process title, which says the same in one line, is kept here too.

use std::time::Instant;

use tracing::{info, warn};

use super::handlers::Outcome;
use super::Supervisor;
use crate::control::socket::Incoming;
use crate::control::{rss_bytes, Accepted, Command, Response, Status, WorkerState, WorkerStatus};
use crate::proctitle;

impl Supervisor {
    /// Answers the requests the control socket read.
    pub(super) fn on_control(&mut self, incoming: Vec<Incoming>) {
        for Incoming { id, request, peer: (uid, pid) } in incoming {
            let response = match request {
                Ok(command) => {
                    info!(
                        event = "control_command",
                        command = command.name(),
                        uid,
                        peer_pid = pid,
                        "ctl {}",
                        command.name()
                    );
                    self.run_command(command)
                }
                Err(reason) => {
                    warn!(event = "control_bad_request", uid, peer_pid = pid, reason = %reason, "control socket: {reason}");
                    Response::error(reason)
                }
            };
            if let Some(control) = self.control.as_mut() {
                control.answer(id, &response);
            }
        }
    }

    /// Runs one command; actions go through the signal handlers.
    fn run_command(&mut self, command: Command) -> Response {
        let outcome: Outcome = match command {
            Command::Status => {
                return Response { status: Some(self.status(Instant::now())), ..Response::ok() };
            }
            Command::Workers => {
                return Response { workers: Some(self.worker_statuses(Instant::now())), ..Response::ok() };
            }
            Command::Reload => self.handle_hup(),
            Command::AddWorker => self.handle_ttin(),
            Command::RemoveWorker => self.handle_ttou(),
            Command::Upgrade => self.handle_usr2(),
            Command::Stop { fast } => self.handle_stop(fast),
        };
        match outcome {
            Ok(message) => Response {
                accepted: Some(Accepted { message, target: self.target, generation: self.generation }),
                ..Response::ok()
            },
            Err(reason) => Response::error(reason),
        }
    }

    /// The supervisor and its workers now.
    fn status(&self, now: Instant) -> Status {
        Status {
            name: self.identity.name.to_string(),
            version: self.identity.version.to_string(),
            pid: std::process::id(),
            generation: self.generation,
            uptime_secs: now.duration_since(self.started).as_secs_f64(),
            phase: self.phase_name().to_string(),
            target: self.target,
            serving: self.table.serving(),
            upgrade_pid: self.upgrade.as_ref().map(|u| u.pid.as_raw() as u32),
            workers: self.worker_statuses(now),
        }
    }

    /// Every live worker, by slot.
    fn worker_statuses(&self, now: Instant) -> Vec<WorkerStatus> {
        let mut workers: Vec<WorkerStatus> = self
            .table
            .workers
            .values()
            .map(|w| WorkerStatus {
                slot: w.slot,
                pid: w.pid.as_raw() as u32,
                generation: w.generation,
                state: match (&w.stop, w.ready) {
                    (Some(_), _) => WorkerState::Draining,
                    (None, true) => WorkerState::Ready,
                    (None, false) => WorkerState::Booting,
                },
                stopping: w.stop.map(|s| s.reason.as_str().to_string()),
                age_secs: now.duration_since(w.started).as_secs_f64(),
                requests: w.requests,
                connections: w.connections,
                rss_bytes: rss_bytes(w.pid.as_raw() as u32),
                last_heartbeat_secs: now.duration_since(w.last_seen).as_secs_f64(),
            })
            .collect();
        workers.sort_by_key(|w| (w.slot, w.pid));
        workers
    }

    /// The phase in one word; a supervisor that handed over to an upgrade says so.
    fn phase_name(&self) -> &'static str {
        if self.handed_over {
            "handed-over"
        } else {
            self.phase.name()
        }
    }

    /// Sets the process title when what it says changed: `<name>: supervisor gen N`, plus what
    /// is going on when the supervisor is not simply running.
    pub(super) fn update_title(&mut self) {
        let doing = match (&self.upgrade, self.phase_name()) {
            (_, "handed-over") => Some("old, draining".to_string()),
            (Some(u), _) => Some(format!("upgrading to pid {}", u.pid)),
            (None, "running") => None,
            (None, other) => Some(other.to_string()),
        };
        let title = proctitle::supervisor(self.identity.name, self.generation, doing.as_deref());
        if title != self.title {
            proctitle::set(&title, Some(self.identity.name));
            self.title = title;
        }
    }
}
