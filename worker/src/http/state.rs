//! What every connection of a worker shares: the settings, the services built at boot, and the
//! worker's own counters (requests, open connections, draining). The process loop owns the
//! lifecycle; handlers only read, and count what they answered.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use supervisor::ipc::WorkerMessage;
use tokio::sync::Notify;
use tracing::info;

use crate::auth::Authenticator;
use crate::channel::Outbox;
use crate::mcp::Dispatcher;
use crate::metrics::Metrics;
use crate::ratelimit::Limiters;
use crate::settings::Settings;

use super::session::Sessions;
use super::stream::Waiters;

/// Who this worker is; shown by `/health` and in logs.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Slot number.
    pub worker_id: u32,
    /// Configuration generation.
    pub generation: u64,
    /// Process id.
    pub pid: u32,
}

/// State shared by every connection of the worker.
pub struct State {
    /// Shown by `/health`.
    pub identity: Identity,
    /// The worker's typed settings.
    pub settings: Settings,
    /// MCP, with every tool registered.
    pub dispatcher: Dispatcher,
    /// Who may call.
    pub auth: Arc<Authenticator>,
    /// Request limits per client, and failed-authentication limits per address.
    pub limits: Option<Limiters>,
    /// This worker's metrics registry.
    pub metrics: &'static Metrics,
    /// The channel to the supervisor (recycling, merged metrics, forwarded answers).
    pub outbox: Outbox,
    /// Signs and checks `Mcp-Session-Id`s.
    pub sessions: Sessions,
    /// Client requests this worker's streams wait on (legacy elicitation).
    pub waiters: Arc<Waiters>,
    requests: AtomicU64,
    connections: AtomicU64,
    draining: AtomicBool,
    max_requests: u64,
    recycle_asked: AtomicBool,
    idle: Notify,
}

/// The parts of [`State`] built at boot.
pub struct Parts {
    /// See [`State::identity`].
    pub identity: Identity,
    /// See [`State::settings`].
    pub settings: Settings,
    /// See [`State::dispatcher`].
    pub dispatcher: Dispatcher,
    /// See [`State::auth`].
    pub auth: Arc<Authenticator>,
    /// See [`State::limits`].
    pub limits: Option<Limiters>,
    /// See [`State::outbox`].
    pub outbox: Outbox,
    /// Requests after which the worker asks to be recycled (0: never).
    pub max_requests: u64,
    /// The key `Mcp-Session-Id`s are signed with (derived from the marker key).
    pub session_key: [u8; 32],
}

impl State {
    /// The state of a worker that has not answered anything yet.
    pub fn new(parts: Parts) -> State {
        let waiters = Arc::new(Waiters::new(parts.identity.worker_id, parts.identity.pid));
        State {
            identity: parts.identity,
            settings: parts.settings,
            dispatcher: parts.dispatcher,
            auth: parts.auth,
            limits: parts.limits,
            metrics: crate::metrics::global(),
            outbox: parts.outbox,
            sessions: Sessions::new(&parts.session_key),
            waiters,
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            max_requests: parts.max_requests,
            recycle_asked: AtomicBool::new(false),
            idle: Notify::new(),
        }
    }

    /// True once the worker stopped accepting: responses must close their connection.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Stops new work: from now on every response closes its connection.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts one answered request and asks for recycling when the budget is spent.
    pub fn request_done(&self) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_requests > 0
            && n >= self.max_requests
            && !self.recycle_asked.swap(true, Ordering::Relaxed)
        {
            info!(
                event = "recycle",
                requests = n,
                max_requests = self.max_requests,
                "request budget spent: asking for a successor"
            );
            self.outbox.send(WorkerMessage::Recycle { requests: n });
        }
    }

    /// Counts a connection for as long as the returned guard lives. The guard's drop does the
    /// accounting, so a connection task that ends in any way (even a panic) is never left
    /// counted and a drain never waits for it.
    pub fn connection_opened(self: &Arc<State>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.metrics.active_connections.inc();
        ConnectionGuard(self.clone())
    }

    /// Waits until no connection is open, or `grace` runs out; true when they all finished.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, async {
            loop {
                let idle = self.idle.notified();
                if self.connections() == 0 {
                    break;
                }
                idle.await;
            }
        })
        .await
        .is_ok()
    }
}

/// One open connection, counted until dropped (see [`State::connection_opened`]).
pub struct ConnectionGuard(Arc<State>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let state = &self.0;
        state.metrics.active_connections.dec();
        if state.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
            state.idle.notify_waiters();
        }
    }
}
