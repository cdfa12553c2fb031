//! The worker's event loop: accept, serve, heartbeat, recycle, drain.
//!
//! Draining never cuts a request: the listeners are dropped (the supervisor still holds the
//! sockets, so queued connections go to other workers), every response from then on carries
//! `Connection: close`, and the worker exits when its last connection ends or
//! `graceful_timeout` runs out. Idle keep-alive connections are not closed under the client's
//! feet: they end when their keep-alive timeout does, or get `Connection: close` on their next
//! request — closing them early is the race that makes clients see resets during reloads.

use std::net::TcpListener as StdTcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use supervisor::child::Inherited;
use supervisor::ipc::WorkerMessage;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{debug, error, info, warn};

use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::aws::Ec2Firewall;
use crate::channel::{self, Outbox};
use crate::forwarded::TrustedProxies;
use crate::http;
use crate::mcp::{standard_registry, Dispatcher, Registry, ServerInfo};
use crate::metrics::Metrics;
use crate::ratelimit::{Limits, RateLimiter};
use crate::settings::Settings;
use crate::versions::SharedVersions;
use crate::whitelist::{Defaults, Parts, Whitelist};
use crate::{sweeper, tools};

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
    /// The tool registry refused a tool (a programming error caught at boot).
    #[error("tool registry: {0}")]
    Registry(#[from] crate::mcp::RegistryError),
}

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
pub struct Shared {
    pub identity: Identity,
    pub settings: Settings,
    pub dispatcher: Dispatcher,
    /// Who may tell us the client's address.
    pub proxies: TrustedProxies,
    /// Who may call.
    pub auth: Arc<Authenticator>,
    /// Request limits per client, and failed-authentication limits per address.
    pub limits: Option<Limiters>,
    /// This worker's metrics registry.
    pub metrics: &'static Metrics,
    requests: AtomicU64,
    connections: AtomicU64,
    draining: AtomicBool,
    max_requests: u64,
    recycle_asked: AtomicBool,
    pub(crate) outbox: Outbox,
    idle: Notify,
}

impl Shared {
    /// True once the worker stopped accepting: responses must close their connection.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
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
}

/// The host-wide rate limiters a worker consults.
pub struct Limiters {
    /// Per client identity.
    pub requests: RateLimiter,
    /// Per address, counting only failed authentications.
    pub auth_failures: RateLimiter,
}

enum AnyListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Serves until drained; blocks the calling thread on a single-threaded runtime.
pub fn run(inherited: Inherited, settings: Settings, hooks: Hooks) -> Result<(), RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(inherited, settings, hooks))
}

async fn serve(inherited: Inherited, settings: Settings, hooks: Hooks) -> Result<(), RunError> {
    let Inherited { listeners, ipc, assignment } = inherited;
    let mut bound = Vec::with_capacity(listeners.len());
    for socket in listeners {
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
    let (outbox, supervisor_gone) = channel::start(ipc)?;
    let mut info = ServerInfo::new("awswhitelist", env!("CARGO_PKG_VERSION"));
    info.worker_id = Some(assignment.worker_id);
    info.generation = Some(assignment.generation);
    let (registry, service, audit) = whitelist_service(&settings)?;
    let dispatcher = Dispatcher::new(info, registry);
    let auth =
        Arc::new(Authenticator::load(&settings.auth).map_err(|e| std::io::Error::other(e.to_string()))?);
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
    let limits = if settings.rate_limit.enabled {
        let r = &settings.rate_limit;
        let dir = &settings.whitelist.state_dir;
        Some(Limiters {
            requests: RateLimiter::open(
                dir.join("ratelimit-requests"),
                Limits { rate_per_minute: r.requests_per_minute, burst: r.burst },
            )?,
            auth_failures: RateLimiter::open(
                dir.join("ratelimit-auth-failures"),
                Limits { rate_per_minute: r.auth_failures_per_minute, burst: r.auth_failures_burst },
            )?,
        })
    } else {
        None
    };
    let proxies = TrustedProxies::parse(&settings.forwarded_allow_ips).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("forwarded_allow_ips entry {:?} is invalid", e.0),
        )
    })?;
    let wl = &settings.whitelist;
    let sweeper = sweeper::Config {
        state_dir: wl.state_dir.clone(),
        interval: Duration::from_secs_f64(wl.sweep_interval),
        groups: wl
            .sweep_groups
            .iter()
            .chain(&wl.policy.allowed_security_groups)
            .filter(|g| !g.contains(['*', '?']))
            .cloned()
            .collect(),
    };
    tokio::spawn(sweeper::run(service, sweeper));
    let shared = Arc::new(Shared {
        identity: Identity {
            worker_id: assignment.worker_id,
            generation: assignment.generation,
            pid: std::process::id(),
        },
        settings,
        dispatcher,
        proxies,
        auth,
        limits,
        metrics: crate::metrics::global(),
        requests: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        max_requests: assignment.max_requests,
        recycle_asked: AtomicBool::new(false),
        outbox: outbox.clone(),
        idle: Notify::new(),
    });

    let mut term = signal(SignalKind::terminate())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;

    let (drain_tx, drain_rx) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(shared.settings.worker_connections));
    for listener in bound {
        tokio::spawn(accept_loop(listener, shared.clone(), limit.clone(), drain_rx.clone()));
    }
    let heartbeat = Duration::from_millis(assignment.heartbeat_interval_ms.max(10));
    tokio::spawn(heartbeats(shared.clone(), heartbeat));

    outbox.send(WorkerMessage::Ready);
    info!(event = "serving", max_requests = assignment.max_requests, "worker serving");

    let mut supervisor_gone = supervisor_gone;
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

    shared.draining.store(true, Ordering::Relaxed);
    let _ = drain_tx.send(true);
    let open = shared.connections.load(Ordering::Relaxed);
    info!(event = "draining", reason = why, connections = open, "draining: stopped accepting");
    let grace = shared.settings.graceful_timeout();
    let drained = tokio::time::timeout(grace, async {
        loop {
            let idle = shared.idle.notified();
            if shared.connections.load(Ordering::Relaxed) == 0 {
                break;
            }
            idle.await;
        }
    })
    .await;
    match drained {
        Ok(()) => info!(
            event = "drained",
            requests = shared.requests.load(Ordering::Relaxed),
            "all connections finished"
        ),
        Err(_) => warn!(
            event = "drain_timeout",
            connections = shared.connections.load(Ordering::Relaxed),
            "graceful_timeout reached with connections open: closing them"
        ),
    }
    // One last count and snapshot, so the supervisor's figures include the final requests;
    // the merged counters are exact for workers that drain.
    outbox.send(WorkerMessage::Heartbeat {
        requests: shared.requests.load(Ordering::Relaxed),
        connections: shared.connections.load(Ordering::Relaxed),
    });
    outbox.send(WorkerMessage::Metrics { families: shared.metrics.snapshot() });
    outbox.flush(Duration::from_secs(2)).await;
    Ok(())
}

/// The whitelist tools and what they stand on: EC2, the audit log, the host's shared cache
/// counters. A file that cannot be opened stops the boot with a message naming it. Shared by
/// the HTTP workers and `stdio`.
pub fn whitelist_service(settings: &Settings) -> Result<(Registry, Arc<Whitelist>, Arc<AuditLog>), RunError> {
    let wl = &settings.whitelist;
    std::fs::create_dir_all(&wl.state_dir).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot create state_dir {}: {e}", wl.state_dir.display()))
    })?;
    let audit = Arc::new(AuditLog::open(&wl.audit_log)?);
    let versions = Arc::new(SharedVersions::open(&wl.state_dir.join("cache-versions"))?);
    let service = Arc::new(Whitelist::new(Parts {
        firewall: Arc::new(Ec2Firewall::new(settings.aws.clone())),
        policy: wl.policy.clone(),
        defaults: Defaults {
            port: wl.default_port.clone(),
            protocol: wl.default_protocol,
            description_template: wl.description_template.clone(),
            user: wl.default_user.clone(),
            reason: wl.default_reason.clone(),
        },
        port_mappings: wl.port_mappings.clone(),
        cache_ttl: Duration::from_secs_f64(wl.cache_ttl),
        versions,
        recorder: audit.clone(),
    }));
    let mut registry = standard_registry(settings.mcp.page_size)?;
    tools::register(&mut registry, service.clone(), Some(wl.state_dir.clone()))?;
    Ok((registry, service, audit))
}

fn fast_exit(signal: &str) -> ! {
    info!(event = "fast_exit", signal, "exiting immediately");
    std::process::exit(0)
}

async fn heartbeats(shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.outbox.send(WorkerMessage::Heartbeat {
            requests: shared.requests.load(Ordering::Relaxed),
            connections: shared.connections.load(Ordering::Relaxed),
        });
        shared.outbox.send(WorkerMessage::Metrics { families: shared.metrics.snapshot() });
    }
}

async fn accept_loop(
    listener: AnyListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    mut drain: watch::Receiver<bool>,
) {
    loop {
        // Waiting for a connection slot before accepting leaves excess connections in the
        // shared queue, where a less busy worker picks them up.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = drain.wait_for(|d| *d) => break,
        };
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            _ = drain.wait_for(|d| *d) => break,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, Some(peer), shared.clone(), permit));
            }
            Ok(Accepted::Unix(stream)) => {
                tokio::spawn(serve_connection(stream, None, shared.clone(), permit));
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
    shared: Arc<Shared>,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    shared.connections.fetch_add(1, Ordering::Relaxed);
    shared.metrics.active_connections.inc();
    let s = &shared.settings;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(s.keepalive())
        .max_headers(s.limit_request_fields)
        .max_header_size(s.max_head_size());
    let service_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| http::handle(req, peer, service_shared.clone()));
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        debug!(error = %e, "connection ended with an error");
    }
    drop(permit);
    shared.metrics.active_connections.dec();
    if shared.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
        shared.idle.notify_waiters();
    }
}
