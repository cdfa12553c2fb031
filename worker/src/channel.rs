//! The worker's end of the supervisor channel, on tokio.

use std::os::unix::net::UnixStream as StdUnixStream;

use supervisor::ipc::{self, WorkerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Sends messages to the supervisor from anywhere in the worker; never blocks the caller.
#[derive(Clone, Debug)]
pub struct Outbox(mpsc::UnboundedSender<WorkerMessage>);

impl Outbox {
    /// Queues one message; lost only if the supervisor is already gone.
    pub fn send(&self, msg: WorkerMessage) {
        let _ = self.0.send(msg);
    }
}

/// Starts the channel's writer and reader tasks. `on_close` resolves when the supervisor closes
/// its end (it exited): the worker must not serve on unsupervised.
pub fn start(stream: StdUnixStream) -> std::io::Result<(Outbox, tokio::sync::oneshot::Receiver<()>)> {
    stream.set_nonblocking(true)?;
    let stream = UnixStream::from_std(stream)?;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<WorkerMessage>();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if let Err(e) = wr.write_all(&ipc::encode(&msg)).await {
                debug!(error = %e, "supervisor channel write failed");
                break;
            }
        }
    });
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
            // No supervisor-to-worker message is expected after the assignment yet; later
            // features (broadcasts) are decoded here.
            debug!(bytes = n, "message from supervisor");
        }
        let _ = closed_tx.send(());
    });
    Ok((Outbox(tx), closed_rx))
}
