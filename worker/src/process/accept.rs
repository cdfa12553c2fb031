//! The inherited listeners on tokio, the accept loop, and one HTTP/1 connection.

use std::net::TcpListener as StdTcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error};

use crate::http::{self, ConnectionGuard, State};

/// A listener the supervisor handed over.
pub(super) enum AnyListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// The inherited sockets as tokio listeners.
pub(super) fn adopt(sockets: Vec<socket2::Socket>) -> std::io::Result<Vec<AnyListener>> {
    let mut bound = Vec::with_capacity(sockets.len());
    for socket in sockets {
        let is_tcp = socket.local_addr()?.as_socket().is_some();
        let fd = OwnedFd::from(socket);
        bound.push(if is_tcp {
            let std = StdTcpListener::from(fd);
            std.set_nonblocking(true)?;
            AnyListener::Tcp(TcpListener::from_std(std)?)
        } else {
            let std = StdUnixListener::from(fd);
            std.set_nonblocking(true)?;
            AnyListener::Unix(UnixListener::from_std(std)?)
        });
    }
    Ok(bound)
}

/// Accepts until the drain starts, one connection per free slot of `limit`.
pub(super) async fn accept_loop(
    listener: AnyListener,
    state: Arc<State>,
    limit: Arc<Semaphore>,
    mut drain: watch::Receiver<bool>,
) {
    loop {
        // Waiting for a connection slot before accepting leaves excess connections in the
        // shared queue, where a less busy worker picks them up.
        // `biased`, the drain first: once it has started, a connection already waiting in the
        // queue is left to the other workers. An unbiased choice could accept it after the
        // drain found no connection open and took the final metrics snapshot, and the request
        // would be answered uncounted.
        let permit = tokio::select! {
            biased;
            _ = drain.wait_for(|d| *d) => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            biased;
            _ = drain.wait_for(|d| *d) => break,
            a = accept(&listener) => a,
        };
        match accepted {
            // Counted here, before the task is spawned: a drain that starts before the task
            // first runs must still wait for this connection, or its request would be
            // answered after the worker's final metrics snapshot and never counted.
            Ok(Accepted::Tcp(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let counted = state.connection_opened();
                tokio::spawn(serve_connection(stream, Some(peer), state.clone(), (counted, permit)));
            }
            Ok(Accepted::Unix(stream)) => {
                let counted = state.connection_opened();
                tokio::spawn(serve_connection(stream, None, state.clone(), (counted, permit)));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a full descriptor table.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    debug!("listener closed in this worker");
}

enum Accepted {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &AnyListener) -> std::io::Result<Accepted> {
    match listener {
        AnyListener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        AnyListener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

async fn serve_connection<I>(
    io: I,
    peer: Option<std::net::SocketAddr>,
    state: Arc<State>,
    held: (ConnectionGuard, OwnedSemaphorePermit),
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The connection's count and its slot are released when this task ends, however it ends.
    let _held = held;
    let s = &state.settings;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(s.keepalive)
        .max_headers(s.limit_request_fields)
        .max_header_size(s.max_head_size());
    let service_state = state.clone();
    // hyper keeps a slot the size of the service's future for every connection, idle or not
    // (`in_flight: Pin<Box<Option<S::Future>>>`). Boxed, that slot is one pointer, and the
    // request pipeline's future (~3.7 KB) is allocated only while a request is in flight.
    let service =
        hyper::service::service_fn(move |req| Box::pin(http::handle(req, peer, service_state.clone())));
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        debug!(error = %e, "connection ended with an error");
    }
}
