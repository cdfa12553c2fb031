//! Merging the workers' metric snapshots into one view of the service (Prometheus multiprocess
//! semantics), plus the supervisor's own series, rendered as the text exposition format.
//!
//! The supervisor knows nothing of what the families measure; it merges by type:
//! - counters and histograms: summed over live workers' last snapshots **plus** a retired total
//!   into which every reaped worker's last snapshot is folded, so no counter ever goes down when
//!   workers recycle, crash or are reloaded;
//! - gauges: summed over live workers only (connections and in-flight requests of the dead are
//!   gone with them).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::ipc::{HistogramSample, MetricFamily, MetricKind};
use crate::table::ExitReason;

/// Labels of one series, in the order the worker sent them.
type Labels = Vec<(String, String)>;

/// A merged series value.
#[derive(Debug, Clone, Default, PartialEq)]
struct Value {
    value: f64,
    /// Histograms: finite buckets (ascending bound, cumulative count), sum, count.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Value {
    fn add(&mut self, value: f64, hist: Option<&HistogramSample>) {
        if value.is_finite() {
            self.value += value;
        }
        if let Some(h) = hist {
            for &(bound, n) in &h.buckets {
                match self.buckets.iter_mut().find(|(b, _)| *b == bound) {
                    Some((_, c)) => *c += n,
                    None => {
                        let at = self.buckets.partition_point(|(b, _)| *b < bound);
                        self.buckets.insert(at, (bound, n));
                    }
                }
            }
            if h.sum.is_finite() {
                self.sum += h.sum;
            }
            self.count += h.count;
        }
    }
}

/// Families merged so far: name → (help, kind, series).
#[derive(Debug, Clone, Default, PartialEq)]
struct Merged {
    families: BTreeMap<String, (String, MetricKind, BTreeMap<Labels, Value>)>,
}

impl Merged {
    /// Adds `families`; gauges only when `gauges` is set. A family whose type disagrees with
    /// what was merged under its name before is skipped.
    fn fold(&mut self, families: &[MetricFamily], gauges: bool) {
        for f in families {
            if f.kind == MetricKind::Gauge && !gauges {
                continue;
            }
            let entry = self
                .families
                .entry(f.name.clone())
                .or_insert_with(|| (f.help.clone(), f.kind, BTreeMap::new()));
            if entry.1 != f.kind {
                continue;
            }
            for s in &f.samples {
                let h = if f.kind == MetricKind::Histogram { s.histogram.as_ref() } else { None };
                let v = if f.kind == MetricKind::Histogram { 0.0 } else { s.value };
                entry.2.entry(s.labels.clone()).or_default().add(v, h);
            }
        }
    }
}

/// The supervisor's figures about its own work.
#[derive(Debug, Clone, Default)]
pub struct SupervisorFigures {
    /// Worker processes started.
    pub worker_starts: u64,
    /// Worker exits by reason.
    pub worker_exits: BTreeMap<ExitReason, u64>,
    /// Accepted reloads.
    pub reloads: u64,
    /// Reloads rejected or rolled back.
    pub reload_failures: u64,
}

/// The merge state that outlives workers.
#[derive(Debug, Default)]
pub struct Metrics {
    retired: Merged,
    /// The supervisor's counters.
    pub own: SupervisorFigures,
}

impl Metrics {
    /// Folds an exited worker's last snapshot into the retired total (counters and histograms).
    pub fn retire(&mut self, last: &[MetricFamily]) {
        self.retired.fold(last, false);
    }

    /// The merged text exposition: retired totals plus `live` snapshots, plus own series.
    pub fn render<'a>(
        &self,
        live: impl Iterator<Item = &'a [MetricFamily]>,
        workers_alive: usize,
        generation: u64,
    ) -> String {
        let mut merged = self.retired.clone();
        for snapshot in live {
            merged.fold(snapshot, true);
        }
        let mut out = String::new();
        for (name, (help, kind, series)) in &merged.families {
            if !valid_name(name) || is_own(name) {
                continue;
            }
            header(&mut out, name, help, *kind);
            for (labels, v) in series {
                match kind {
                    MetricKind::Counter | MetricKind::Gauge => sample(&mut out, name, labels, None, v.value),
                    MetricKind::Histogram => {
                        let bucket = format!("{name}_bucket");
                        for &(bound, n) in &v.buckets {
                            sample(&mut out, &bucket, labels, Some(&number(bound)), n as f64);
                        }
                        sample(&mut out, &bucket, labels, Some("+Inf"), v.count as f64);
                        sample(&mut out, &format!("{name}_sum"), labels, None, v.sum);
                        sample(&mut out, &format!("{name}_count"), labels, None, v.count as f64);
                    }
                }
            }
        }
        let own = &self.own;
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            header(out, name, help, MetricKind::Gauge);
            sample(out, name, &[], None, v);
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            header(out, name, help, MetricKind::Counter);
            sample(out, name, &[], None, v as f64);
        };
        gauge(&mut out, "awswhitelist_workers", "Worker processes alive.", workers_alive as f64);
        gauge(
            &mut out,
            "awswhitelist_generation",
            "Configuration generation being served.",
            generation as f64,
        );
        counter(&mut out, "awswhitelist_worker_starts_total", "Worker processes started.", own.worker_starts);
        header(
            &mut out,
            "awswhitelist_worker_exits_total",
            "Worker process exits by reason.",
            MetricKind::Counter,
        );
        for reason in ALL_REASONS {
            let n = own.worker_exits.get(&reason).copied().unwrap_or(0);
            let labels = [("reason".to_string(), reason.as_str().to_string())];
            sample(&mut out, "awswhitelist_worker_exits_total", &labels, None, n as f64);
        }
        counter(&mut out, "awswhitelist_reloads_total", "Configuration reloads accepted.", own.reloads);
        counter(
            &mut out,
            "awswhitelist_reload_failures_total",
            "Configuration reloads rejected or rolled back.",
            own.reload_failures,
        );
        out
    }
}

const ALL_REASONS: [ExitReason; 7] = [
    ExitReason::Recycle,
    ExitReason::Reload,
    ExitReason::ScaleDown,
    ExitReason::Timeout,
    ExitReason::Shutdown,
    ExitReason::Crash,
    ExitReason::BootFailure,
];

fn is_own(name: &str) -> bool {
    name.starts_with("awswhitelist_")
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: anything else could break the exposition.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label(name: &str) -> bool {
    valid_name(name) && !name.contains(':') && name != "le"
}

fn header(out: &mut String, name: &str, help: &str, kind: MetricKind) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let kind = match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(String, String)], le: Option<&str>, value: f64) {
    out.push_str(name);
    let mut pairs: Vec<(&str, String)> =
        labels.iter().filter(|(k, _)| valid_label(k)).map(|(k, v)| (k.as_str(), escape_label(v))).collect();
    if let Some(le) = le {
        pairs.push(("le", le.to_string()));
    }
    if !pairs.is_empty() {
        out.push('{');
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A float as the exposition format spells it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::MetricSample;

    fn counter(name: &str, labels: &[(&str, &str)], v: f64) -> MetricFamily {
        MetricFamily {
            name: name.into(),
            help: "help".into(),
            kind: MetricKind::Counter,
            samples: vec![MetricSample {
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                value: v,
                histogram: None,
            }],
        }
    }

    fn gauge(name: &str, v: f64) -> MetricFamily {
        MetricFamily { kind: MetricKind::Gauge, ..counter(name, &[], v) }
    }

    fn hist(buckets: &[(f64, u64)], sum: f64, count: u64) -> MetricFamily {
        MetricFamily {
            name: "d_seconds".into(),
            help: "h".into(),
            kind: MetricKind::Histogram,
            samples: vec![MetricSample {
                labels: vec![("method".into(), "ping".into())],
                value: 0.0,
                histogram: Some(HistogramSample { buckets: buckets.to_vec(), sum, count }),
            }],
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    }

    #[test]
    fn counters_survive_retirement_and_gauges_do_not() {
        let mut m = Metrics::default();
        let a = vec![counter("req_total", &[("status", "200")], 5.0), gauge("conn", 2.0)];
        let b = vec![counter("req_total", &[("status", "200")], 7.0), gauge("conn", 1.0)];
        let text = m.render([a.as_slice(), b.as_slice()].into_iter(), 2, 1);
        assert!(text.contains("req_total{status=\"200\"} 12\n"), "{text}");
        assert!(text.contains("conn 3\n"), "{text}");
        m.retire(&a);
        let text = m.render([b.as_slice()].into_iter(), 1, 1);
        assert!(text.contains("req_total{status=\"200\"} 12\n"), "{text}");
        assert!(text.contains("conn 1\n"), "{text}");
        assert!(text.contains("# TYPE req_total counter\n"));
    }

    #[test]
    fn histograms_merge_bucket_by_bucket() {
        let m = Metrics::default();
        let a = vec![hist(&[(0.1, 1), (1.0, 3)], 1.5, 4)];
        let b = vec![hist(&[(0.1, 2), (1.0, 2)], 0.25, 2)];
        let text = m.render([a.as_slice(), b.as_slice()].into_iter(), 2, 1);
        assert_eq!(
            line(&text, "d_seconds_bucket{method=\"ping\",le=\"0.1\"}"),
            "d_seconds_bucket{method=\"ping\",le=\"0.1\"} 3"
        );
        assert_eq!(
            line(&text, "d_seconds_bucket{method=\"ping\",le=\"1\"}"),
            "d_seconds_bucket{method=\"ping\",le=\"1\"} 5"
        );
        assert_eq!(
            line(&text, "d_seconds_bucket{method=\"ping\",le=\"+Inf\"}"),
            "d_seconds_bucket{method=\"ping\",le=\"+Inf\"} 6"
        );
        assert_eq!(line(&text, "d_seconds_sum"), "d_seconds_sum{method=\"ping\"} 1.75");
        assert_eq!(line(&text, "d_seconds_count"), "d_seconds_count{method=\"ping\"} 6");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let m = Metrics::default();
        let mut f = counter("x_total", &[("k", "a\"b\\c\nd")], 1.0);
        f.help = "line\\one\ntwo".into();
        let text = m.render([std::slice::from_ref(&f)].into_iter(), 0, 3);
        assert!(text.contains("# HELP x_total line\\\\one\\ntwo\n"), "{text}");
        assert!(text.contains("x_total{k=\"a\\\"b\\\\c\\nd\"} 1\n"), "{text}");
        assert!(text.contains("awswhitelist_generation 3\n"), "{text}");
        assert!(text.contains("awswhitelist_worker_exits_total{reason=\"crash\"} 0\n"), "{text}");
    }
}
