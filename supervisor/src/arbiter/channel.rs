//! The private channel to each worker (a socket pair, length-prefixed JSON frames): reading
//! and acting on what workers say (READY, heartbeats, recycle requests, metric snapshots),
//! answering metric requests with the merged view, passing messages between workers, and
//! writing without ever blocking.

use std::io::{self, Read, Write};
use std::time::Instant;

use nix::unistd::Pid;
use tracing::{error, info, warn};

use super::Supervisor;
use crate::ipc::{self, SupervisorMessage, WorkerMessage};

/// Pending output per worker beyond which further messages are dropped.
const OUTBUF_LIMIT: usize = 4 * ipc::MAX_FRAME;

impl Supervisor {
    /// Acts on one message from a worker; any message counts as a sign of life.
    fn on_message(&mut self, pid: Pid, msg: WorkerMessage) {
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
            WorkerMessage::Forward { to_pid, payload } => self.forward(pid, to_pid, payload),
        }
    }

    /// Passes a message from one worker to another, unread; one for a process that is not a
    /// worker of this supervisor (it exited meanwhile) is dropped.
    fn forward(&mut self, from: Pid, to_pid: i32, payload: String) {
        let to = Pid::from_raw(to_pid);
        if to == from || !self.table.workers.contains_key(&to) {
            warn!(
                event = "forward_dropped",
                from_pid = from.as_raw(),
                to_pid,
                "a message for worker pid {to_pid}, which is not a live worker, was dropped"
            );
            return;
        }
        self.send(to, &SupervisorMessage::Forwarded { from_pid: from.as_raw(), payload });
    }

    /// The merged metrics of the whole service.
    fn metrics_text(&self) -> String {
        let live = self.table.workers.values().map(|w| w.metrics.as_slice());
        self.metrics.render(live, self.table.workers.len(), self.generation)
    }

    /// Queues a message for a worker and writes what the channel takes now; the rest goes out
    /// when poll says the channel is writable, so a slow worker never blocks the supervisor.
    fn send(&mut self, pid: Pid, msg: &SupervisorMessage) {
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

    /// Reads what a worker wrote and acts on every complete message; a closed or corrupt
    /// channel is marked closed (the worker's exit or its timeout follows).
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
