//! The worker's end of the private channel to the supervisor (a socketpair, length-prefixed
//! JSON), on tokio: READY, heartbeats, recycling requests, metric snapshots, the merged
//! metrics the supervisor answers with, and messages other workers forward through it.
//!
//! May import: nothing of this crate. Imported by: `process` (READY, heartbeats, drain) and
//! `http` (recycling, `/metrics`).

use std::collections::HashMap;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use supervisor::ipc::{self, SupervisorMessage, WorkerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Answers the supervisor owes this worker, by request id.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<String>>>>;

enum Out {
    Msg(WorkerMessage),
    /// Acknowledged once everything queued before it has been written.
    Flush(oneshot::Sender<()>),
}

/// Sends messages to the supervisor from anywhere in the worker; never blocks the caller.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

impl Outbox {
    /// Queues one message; lost only if the supervisor is already gone.
    pub fn send(&self, msg: WorkerMessage) {
        let _ = self.tx.send(Out::Msg(msg));
    }

    /// Waits (at most `limit`) until every message queued so far has been written.
    pub async fn flush(&self, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Out::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }

    /// Asks the supervisor for the merged metrics text; `None` on timeout or a closed channel.
    pub async fn metrics_text(&self, limit: Duration) -> Option<String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().ok()?.insert(id, tx);
        self.send(WorkerMessage::MetricsRequest { id });
        let answer = tokio::time::timeout(limit, rx).await;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        answer.ok()?.ok()
    }
}

/// What [`start`] gives the worker: the outbox, a receiver that resolves when the supervisor
/// closes its end (it exited: the worker must not serve on unsupervised), and the payloads
/// other workers forward to this one.
pub type Started = (Outbox, oneshot::Receiver<()>, mpsc::UnboundedReceiver<String>);

/// Starts the channel's writer and reader tasks.
pub fn start(stream: StdUnixStream) -> std::io::Result<Started> {
    stream.set_nonblocking(true)?;
    let stream = UnixStream::from_std(stream)?;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let (closed_tx, closed_rx) = oneshot::channel();
    let pending: Pending = Arc::default();
    let (forwarded_tx, forwarded_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Msg(msg) => {
                    if let Err(e) = wr.write_all(&ipc::encode(&msg)).await {
                        debug!(error = %e, "supervisor channel write failed");
                        break;
                    }
                }
                Out::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    });
    let answers = pending.clone();
    tokio::spawn(async move {
        let mut len = [0u8; 4];
        loop {
            if rd.read_exact(&mut len).await.is_err() {
                break;
            }
            let n = u32::from_be_bytes(len) as usize;
            if n > ipc::MAX_FRAME {
                warn!(bytes = n, "oversized frame from supervisor");
                break;
            }
            let mut body = vec![0u8; n];
            if rd.read_exact(&mut body).await.is_err() {
                break;
            }
            match ipc::decode::<SupervisorMessage>(&body) {
                Ok(SupervisorMessage::MetricsText { id, text }) => {
                    let waiter = answers.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(w) = waiter {
                        let _ = w.send(text);
                    }
                }
                Ok(SupervisorMessage::Forwarded { payload, .. }) => {
                    let _ = forwarded_tx.send(payload);
                }
                Ok(_) => debug!("unexpected message from supervisor"),
                Err(e) => warn!(error = %e, "undecodable message from supervisor"),
            }
        }
        let _ = closed_tx.send(());
    });
    Ok((Outbox { tx, pending, next_id: Arc::new(AtomicU64::new(1)) }, closed_rx, forwarded_rx))
}
