//! This worker's metrics: one `prometheus` registry, snapshotted to the supervisor, which merges
//! every worker's snapshots into the view `GET /metrics` serves.
//!
//! Label values are bounded: JSON-RPC methods outside a fixed list become `other`, HTTP statuses
//! are codes the server itself produces, and nothing the client chooses (addresses, user names,
//! tool arguments) ever becomes a label.

use prometheus::proto::MetricType;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use supervisor::ipc::{HistogramSample, MetricFamily, MetricKind, MetricSample};

/// JSON-RPC methods that get their own label value; anything else is `other`.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "notifications/initialized",
    "notifications/cancelled",
    "ping",
    "tools/list",
    "tools/call",
    "server/discover",
    "resources/list",
    "prompts/list",
    "logging/setLevel",
];

/// This process's metrics: one registry per worker process (and one, unused, in `stdio`).
pub fn global() -> &'static Metrics {
    static GLOBAL: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

/// Counts one AWS API call; `action` is `service:Operation`, a constant of the AWS layer.
pub fn aws_call<T, E>(action: &'static str, result: Result<T, E>) -> Result<T, E> {
    let (service, operation) = action.split_once(':').unwrap_or(("aws", action));
    let status = if result.is_ok() { "ok" } else { "error" };
    global().aws_calls.with_label_values(&[service, operation, status]).inc();
    result
}

/// The EC2 operations the AWS layer calls.
const AWS_OPERATIONS: [&str; 4] = [
    "DescribeSecurityGroups",
    "DescribeSecurityGroupRules",
    "AuthorizeSecurityGroupIngress",
    "RevokeSecurityGroupIngress",
];

/// `(action, result)` pairs the whitelist service audits.
const WHITELIST_OUTCOMES: [(&str, &str); 5] =
    [("add", "added"), ("add", "failed"), ("remove", "removed"), ("remove", "failed"), ("expire", "expired")];

/// Every family a worker exports.
pub struct Metrics {
    registry: Registry,
    /// `mcp_requests_total{method,status}`.
    pub mcp_requests: IntCounterVec,
    /// `mcp_request_duration_seconds{method}`.
    pub mcp_duration: HistogramVec,
    /// `mcp_active_connections`.
    pub active_connections: IntGauge,
    /// `mcp_aws_api_calls_total{service,operation,status}`.
    pub aws_calls: IntCounterVec,
    /// `http_requests_total{status}`.
    pub http_requests: IntCounterVec,
    /// `auth_failures_total{reason}`.
    pub auth_failures: IntCounterVec,
    /// `rate_limited_total`.
    pub rate_limited: IntCounter,
    /// `cache_hits_total`.
    pub cache_hits: IntCounter,
    /// `cache_misses_total`.
    pub cache_misses: IntCounter,
    /// `whitelist_changes_total{action,result}`.
    pub whitelist_changes: IntCounterVec,
    /// `awswl_marker_invalid_total{reason}`: rules seen whose marker does not verify.
    pub marker_invalid: IntCounterVec,
    /// `mcp_panics_total`: tool calls that panicked (each answered with -32603).
    pub panics: IntCounter,
    /// `awswl_consent_total{event}`: a person's consent asked, accepted, declined, refused
    /// (a client that cannot ask, a bad request state) or expired.
    pub consent: IntCounterVec,
    /// `redis_up`: 1 while this worker's link to the fleet's Redis answers (summed over the
    /// host's workers); 0 without `[redis]`.
    pub redis_up: IntGauge,
    /// `redis_fallbacks_total{feature,mode}`: decisions taken without Redis, by the fallback
    /// `[redis]` configures (`fail_open`, `fail_closed`).
    pub redis_fallbacks: IntCounterVec,
}

/// The `event` values of `awswl_consent_total`.
pub const CONSENT_EVENTS: [&str; 5] = ["asked", "accepted", "declined", "refused", "expired"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            registry.register(Box::new(c.clone())).expect("unique metric name");
            c
        };
        let plain = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric definition");
            registry.register(Box::new(c.clone())).expect("unique metric name");
            c
        };
        let mcp_requests = counter(
            "mcp_requests_total",
            "MCP JSON-RPC requests by method and outcome.",
            &["method", "status"],
        );
        let aws_calls = counter(
            "mcp_aws_api_calls_total",
            "AWS API calls by service, operation and outcome.",
            &["service", "operation", "status"],
        );
        let http_requests =
            counter("http_requests_total", "HTTP requests answered, by status code.", &["status"]);
        let auth_failures = counter("auth_failures_total", "Failed authentications by reason.", &["reason"]);
        let whitelist_changes = counter(
            "whitelist_changes_total",
            "Whitelist changes by action and result.",
            &["action", "result"],
        );
        let marker_invalid = counter(
            "awswl_marker_invalid_total",
            "Rules seen whose awswl marker does not verify (unsigned, malformed or mismatch); never swept.",
            &["reason"],
        );
        for reason in ["unsigned", "malformed", "mismatch"] {
            marker_invalid.with_label_values(&[reason]);
        }
        let consent = counter(
            "awswl_consent_total",
            "Changes that needed a person's consent: asked, accepted, declined, refused (the client cannot ask, or a bad request state) or expired.",
            &["event"],
        );
        for event in CONSENT_EVENTS {
            consent.with_label_values(&[event]);
        }
        let rate_limited = plain("rate_limited_total", "Requests refused by a rate limit.");
        let cache_hits = plain("cache_hits_total", "Security group cache hits.");
        let cache_misses = plain("cache_misses_total", "Security group cache misses.");
        let panics = plain("mcp_panics_total", "Tool calls that panicked (answered with an internal error).");
        let mcp_duration = HistogramVec::new(
            HistogramOpts::new("mcp_request_duration_seconds", "MCP request duration by method."),
            &["method"],
        )
        .expect("valid metric definition");
        registry.register(Box::new(mcp_duration.clone())).expect("unique metric name");
        let active_connections = IntGauge::new("mcp_active_connections", "HTTP connections open.")
            .expect("valid metric definition");
        registry.register(Box::new(active_connections.clone())).expect("unique metric name");
        let redis_up = IntGauge::new("redis_up", "Workers whose link to the fleet's Redis answers.")
            .expect("valid metric definition");
        registry.register(Box::new(redis_up.clone())).expect("unique metric name");
        let redis_fallbacks = counter(
            "redis_fallbacks_total",
            "Decisions taken without Redis, by feature and configured fallback.",
            &["feature", "mode"],
        );
        for mode in ["fail_open", "fail_closed"] {
            redis_fallbacks.with_label_values(&["rate_limit", mode]);
        }
        for (feature, mode) in [
            ("cache", "no_cache"),
            ("consent", "fail_closed"),
            ("consent", "host"),
            ("group_lock", "host"),
            ("read_flight", "host"),
            ("sweeper", "host"),
        ] {
            redis_fallbacks.with_label_values(&[feature, mode]);
        }
        // Known label sets start at zero, so every family shows in /metrics (dashboards and
        // alerts see a 0, not an absent series, and `rate()` sees the first increment).
        for method in ["initialize", "ping", "tools/list", "tools/call"] {
            for status in ["ok", "error"] {
                mcp_requests.with_label_values(&[method, status]);
            }
        }
        mcp_duration.with_label_values(&["tools/call"]);
        for op in AWS_OPERATIONS {
            for status in ["ok", "error"] {
                aws_calls.with_label_values(&["ec2", op, status]);
            }
        }
        http_requests.with_label_values(&["200"]);
        for reason in ["missing", "invalid_token", "insufficient_scope", "unavailable"] {
            auth_failures.with_label_values(&[reason]);
        }
        for (action, result) in WHITELIST_OUTCOMES {
            whitelist_changes.with_label_values(&[action, result]);
        }
        Metrics {
            registry,
            mcp_requests,
            mcp_duration,
            active_connections,
            aws_calls,
            http_requests,
            auth_failures,
            rate_limited,
            cache_hits,
            cache_misses,
            whitelist_changes,
            marker_invalid,
            panics,
            consent,
            redis_up,
            redis_fallbacks,
        }
    }

    /// The bounded label value for a JSON-RPC method.
    pub fn method_label(method: &str) -> &'static str {
        KNOWN_METHODS.iter().find(|m| **m == method).copied().unwrap_or("other")
    }

    /// Records one MCP request (`method` already bounded by [`Metrics::method_label`] or
    /// `"batch"`).
    pub fn mcp_request(&self, method: &'static str, ok: bool, seconds: f64) {
        self.mcp_requests.with_label_values(&[method, if ok { "ok" } else { "error" }]).inc();
        self.mcp_duration.with_label_values(&[method]).observe(seconds);
    }

    /// Records one answered HTTP request.
    pub fn http_request(&self, status: u16) {
        self.http_requests.with_label_values(&[status_label(status)]).inc();
    }

    /// The registry in the supervisor's wire form.
    pub fn snapshot(&self) -> Vec<MetricFamily> {
        self.registry.gather().iter().filter_map(convert).collect()
    }

    /// The histogram for one method (tests).
    #[cfg(test)]
    fn duration(&self, method: &str) -> prometheus::Histogram {
        self.mcp_duration.with_label_values(&[method])
    }
}

/// A status code as a label: the codes this server produces, else the class.
fn status_label(status: u16) -> &'static str {
    const CODES: &[(u16, &str)] = &[
        (200, "200"),
        (202, "202"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (406, "406"),
        (408, "408"),
        (413, "413"),
        (414, "414"),
        (415, "415"),
        (429, "429"),
        (431, "431"),
        (500, "500"),
        (503, "503"),
    ];
    if let Some((_, s)) = CODES.iter().find(|(c, _)| *c == status) {
        return s;
    }
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

fn convert(f: &prometheus::proto::MetricFamily) -> Option<MetricFamily> {
    let kind = match f.get_field_type() {
        MetricType::COUNTER => MetricKind::Counter,
        MetricType::GAUGE => MetricKind::Gauge,
        MetricType::HISTOGRAM => MetricKind::Histogram,
        _ => return None,
    };
    let samples = f
        .get_metric()
        .iter()
        .map(|m| {
            let labels =
                m.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
            let (value, histogram) = match kind {
                MetricKind::Counter => (finite(m.get_counter().get_value()), None),
                MetricKind::Gauge => (finite(m.get_gauge().get_value()), None),
                MetricKind::Histogram => {
                    let h = m.get_histogram();
                    let buckets = h
                        .get_bucket()
                        .iter()
                        .filter(|b| b.upper_bound().is_finite())
                        .map(|b| (b.upper_bound(), b.cumulative_count()))
                        .collect();
                    let sample = HistogramSample {
                        buckets,
                        sum: finite(h.get_sample_sum()),
                        count: h.get_sample_count(),
                    };
                    (0.0, Some(sample))
                }
            };
            MetricSample { labels, value, histogram }
        })
        .collect();
    Some(MetricFamily { name: f.name().to_string(), help: f.help().to_string(), kind, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_statuses_are_bounded() {
        assert_eq!(Metrics::method_label("tools/call"), "tools/call");
        assert_eq!(Metrics::method_label("../../etc/passwd"), "other");
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
    }

    #[test]
    fn snapshot_carries_every_type() {
        let m = Metrics::new();
        m.mcp_request("ping", true, 0.02);
        m.mcp_request("ping", false, 3.0);
        m.http_request(200);
        m.active_connections.set(2);
        let snap = m.snapshot();
        let get = |n: &str| snap.iter().find(|f| f.name == n).unwrap_or_else(|| panic!("{n} missing"));
        let d = get("mcp_request_duration_seconds");
        assert_eq!(d.kind, MetricKind::Histogram);
        let h = d.samples[0].histogram.as_ref().unwrap();
        assert_eq!(h.count, 2);
        assert!((h.sum - 3.02).abs() < 1e-9);
        let at = |bound: f64| h.buckets.iter().find(|b| b.0 == bound).unwrap().1;
        assert_eq!((at(0.025), at(2.5), at(10.0)), (1, 1, 2));
        assert_eq!(m.duration("ping").get_sample_count(), 2);
        assert_eq!(get("mcp_active_connections").samples[0].value, 2.0);
        let req = get("mcp_requests_total");
        let ping = |status: &str| {
            let labels =
                vec![("method".to_string(), "ping".to_string()), ("status".to_string(), status.to_string())];
            req.samples.iter().find(|s| s.labels == labels).map(|s| s.value)
        };
        assert_eq!((ping("ok"), ping("error")), (Some(1.0), Some(1.0)));
        let http = get("http_requests_total");
        assert_eq!(http.samples[0].labels, vec![("status".into(), "200".into())]);
        assert_eq!(http.samples[0].value, 1.0);
        for family in ["auth_failures_total", "whitelist_changes_total", "mcp_aws_api_calls_total"] {
            assert!(get(family).samples.iter().all(|s| s.value == 0.0), "{family} starts at zero");
        }
        // Survives the wire.
        let frame =
            supervisor::ipc::encode(&supervisor::ipc::WorkerMessage::Metrics { families: snap.clone() });
        let back: supervisor::ipc::WorkerMessage = supervisor::ipc::decode(&frame[4..]).unwrap();
        assert_eq!(back, supervisor::ipc::WorkerMessage::Metrics { families: snap });
    }
}
