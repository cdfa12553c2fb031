//! The worker process: boot, serve, heartbeat, recycle, drain.
//!
//! Draining never cuts a request: the listeners are dropped (the supervisor still holds the
//! sockets, so queued connections go to other workers), every response from then on carries
//! `Connection: close`, and the worker exits when its last connection ends or
//! `graceful_timeout` runs out. Idle keep-alive connections are not closed under the client's
//! feet: they end when their keep-alive timeout does, or get `Connection: close` on their next
//! request — closing them early is the race that makes clients see resets during reloads.
//!
//! May import: `app`, `http`, `channel`, `auth`, `ratelimit`, `settings`. Imported by: the
//! binary's `worker` command only. Nothing imports it inside this crate (it is the top).

mod accept;

use std::sync::Arc;
use std::time::Duration;

use supervisor::child::Inherited;
use supervisor::ipc::WorkerMessage;
use supervisor::proctitle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Semaphore};
use tracing::{error, info, warn};

use crate::app::{App, BuildError};
use crate::auth::Authenticator;
use crate::channel;
use crate::fleet::Fleet;
use crate::http::state::{Identity, Parts, State};
use crate::mcp::ServerInfo;
use crate::ratelimit::Limiters;
use crate::settings::Settings;

/// Callbacks into the binary, for things the worker crate does not own.
#[derive(Default)]
pub struct Hooks {
    /// Reopens log files (USR1, after logrotate moved them).
    pub reopen_logs: Option<Box<dyn Fn() + Send + Sync>>,
}

/// Why a worker could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The runtime or a listener could not be set up.
    #[error("worker setup: {0}")]
    Setup(#[from] std::io::Error),
    /// The services could not be built.
    #[error("{0}")]
    Build(#[from] BuildError),
    /// Authentication could not be set up (a secret or key file).
    #[error("auth: {0}")]
    Auth(String),
    /// The link to Redis could not be set up (`[redis]`: its password or an address).
    #[error("redis: {0}")]
    Fleet(String),
}

/// Serves until drained; blocks the calling thread on a single-threaded runtime.
pub fn run(inherited: Inherited, settings: Settings, hooks: Hooks) -> Result<(), RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(inherited, settings, hooks))
}

/// How long a draining worker waits for its sweeper to give the fleet's lease up.
const SWEEPER_STOP: Duration = Duration::from_secs(1);

/// The worker's `comm` (15 bytes at most), what `top` and `pgrep` show; `ps` shows the title.
const COMM: &str = "awswl-worker";

async fn serve(inherited: Inherited, settings: Settings, hooks: Hooks) -> Result<(), RunError> {
    let Inherited { listeners, ipc, assignment } = inherited;
    // This future runs on the main thread (a current-thread runtime), whose name is `comm`.
    let title = |draining| {
        let t = proctitle::worker("awswhitelist", assignment.worker_id, assignment.generation, draining);
        proctitle::set(&t, Some(COMM));
    };
    title(false);
    let listeners = accept::adopt(listeners)?;
    let (outbox, mut supervisor_gone, mut forwarded) = channel::start(ipc)?;
    let mut info = ServerInfo::new("awswhitelist", env!("CARGO_PKG_VERSION"));
    info.worker_id = Some(assignment.worker_id);
    info.generation = Some(assignment.generation);
    // Built here, in the worker, after the fork: a Redis connection never crosses a fork.
    let fleet = match &settings.redis {
        Some(redis) => Some(Arc::new(Fleet::new(redis).map_err(RunError::Fleet)?)),
        None => None,
    };
    let app = App::build(&settings, info, fleet.clone())?;
    let auth = Arc::new(Authenticator::load(&settings.auth).map_err(|e| RunError::Auth(e.to_string()))?);
    if auth.enabled() {
        // Warm the JWKS cache without holding up READY: an issuer that is down must not keep
        // the worker from serving API keys and HS tokens.
        let warm = auth.clone();
        tokio::spawn(async move {
            if let Err(e) = warm.refresh_jwks().await {
                warn!(event = "jwks_unavailable", error = %e, "cannot fetch the issuer's keys yet: {e}");
            }
        });
    } else {
        warn!(event = "auth_disabled", "authentication is OFF: anyone who can reach the listeners may change security groups (allowed only on loopback)");
    }
    let limits = match &settings.rate_limit {
        Some(limits) => Some(Limiters::open(&settings.whitelist.state_dir, limits, fleet.as_ref())?),
        None => None,
    };
    let (drain_tx, drain_rx) = watch::channel(false);
    let sweeper = app.spawn_sweeper(Some(drain_rx.clone()));
    let session_key = app.derive_key(crate::http::session::KEY_LABEL);
    let App { dispatcher, audit, .. } = app;
    let state = Arc::new(State::new(Parts {
        identity: Identity {
            worker_id: assignment.worker_id,
            generation: assignment.generation,
            pid: std::process::id(),
        },
        settings,
        dispatcher,
        auth,
        limits,
        fleet,
        outbox: outbox.clone(),
        max_requests: assignment.max_requests,
        session_key,
    }));
    // Answers to this worker's questions that reached another worker, passed on by the supervisor.
    let answers = state.clone();
    tokio::spawn(async move {
        while let Some(payload) = forwarded.recv().await {
            crate::http::deliver_forwarded(&answers, &payload);
        }
    });

    let mut term = signal(SignalKind::terminate())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;

    let limit = Arc::new(Semaphore::new(state.settings.worker_connections));
    for listener in listeners {
        tokio::spawn(accept::accept_loop(listener, state.clone(), limit.clone(), drain_rx.clone()));
    }
    let heartbeat = Duration::from_millis(assignment.heartbeat_interval_ms.max(10));
    tokio::spawn(heartbeats(state.clone(), heartbeat));

    outbox.send(WorkerMessage::Ready);
    info!(event = "serving", max_requests = assignment.max_requests, "worker serving");

    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = &mut supervisor_gone => break "supervisor exited",
            _ = quit.recv() => fast_exit("SIGQUIT"),
            _ = int.recv() => fast_exit("SIGINT"),
            _ = usr1.recv() => {
                if let Some(reopen) = &hooks.reopen_logs {
                    reopen();
                }
                if let Err(e) = audit.reopen() {
                    error!(error = %e, "cannot reopen the audit log; still writing to the old file");
                }
                info!(event = "logs_reopened", "reopened log files");
            }
        }
    };

    state.start_draining();
    let _ = drain_tx.send(true);
    title(true);
    info!(event = "draining", reason = why, connections = state.connections(), "draining: stopped accepting");
    if state.wait_idle(state.settings.graceful_timeout).await {
        info!(event = "drained", requests = state.requests(), "all connections finished");
    } else {
        warn!(
            event = "drain_timeout",
            connections = state.connections(),
            "graceful_timeout reached with connections open: closing them"
        );
    }
    // The sweeper gives the fleet's lease up (if it holds it) so another host need not wait
    // for it to expire; one caught mid-sweep is not waited for long (the lease expires anyway).
    let _ = tokio::time::timeout(SWEEPER_STOP, sweeper).await;
    // One last count and snapshot, so the supervisor's figures include the final requests;
    // the merged counters are exact for workers that drain.
    outbox.send(WorkerMessage::Heartbeat { requests: state.requests(), connections: state.connections() });
    outbox.send(WorkerMessage::Metrics { families: state.metrics.snapshot() });
    outbox.flush(Duration::from_secs(2)).await;
    Ok(())
}

fn fast_exit(signal: &str) -> ! {
    info!(event = "fast_exit", signal, "exiting immediately");
    std::process::exit(0)
}

async fn heartbeats(state: Arc<State>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state
            .outbox
            .send(WorkerMessage::Heartbeat { requests: state.requests(), connections: state.connections() });
        state.outbox.send(WorkerMessage::Metrics { families: state.metrics.snapshot() });
    }
}
