//! The private channel between the supervisor and one worker: length-prefixed JSON frames.
//!
//! Each frame is a 4-byte big-endian length followed by that many bytes of JSON, one message per
//! frame. JSON keeps the channel readable in `strace` and lets later features add message kinds
//! without touching the framing; the length prefix means a reader never has to scan for
//! delimiters or guess where a message ends. The channel is a `socketpair`, so it has no path
//! on disk that another local user could connect to.

use serde::{Deserialize, Serialize};

/// Frames larger than this are refused: a peer sending one is broken or hostile, and refusing
/// keeps a single bad length prefix from making the supervisor allocate gigabytes.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What a worker tells its supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// The worker accepts connections now: its predecessor (if any) may be told to drain.
    Ready,
    /// Proof of life, sent on a timer from the worker's event loop, so a blocked loop goes silent.
    Heartbeat {
        /// Requests answered since the worker started.
        requests: u64,
        /// Connections open right now.
        connections: u64,
    },
    /// The worker reached its request budget and asks for a successor; it keeps serving until
    /// the supervisor tells it to drain.
    Recycle {
        /// Requests answered when the budget ran out.
        requests: u64,
    },
    /// A snapshot of the worker's metric families: the whole registry, cumulative since the
    /// worker started. Sent periodically and once more after a graceful drain; the supervisor
    /// keeps the last one per worker and merges them without knowing what they measure.
    Metrics {
        /// Every family the worker exports.
        families: Vec<MetricFamily>,
    },
    /// A request for the merged metrics of the whole service, answered by
    /// [`SupervisorMessage::MetricsText`] with the same `id`.
    MetricsRequest {
        /// Chosen by the worker to match the answer to its question.
        id: u64,
    },
    /// Something for another worker, passed on untouched as [`SupervisorMessage::Forwarded`]
    /// (a client's answer that reached this worker while `to_pid` holds the stream waiting
    /// for it). The supervisor does not read `payload`; a `to_pid` that is not one of its
    /// workers is dropped and logged.
    Forward {
        /// The worker it is for.
        to_pid: i32,
        /// Opaque to the supervisor.
        payload: String,
    },
}

/// One metric family as a worker exports it (the Prometheus data model, minus summaries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricFamily {
    /// Metric name, e.g. `http_requests_total`.
    pub name: String,
    /// The HELP text.
    pub help: String,
    /// How samples merge across workers.
    pub kind: MetricKind,
    /// One sample per label set.
    pub samples: Vec<MetricSample>,
}

/// The type of a family, which decides how the supervisor merges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Monotonic: summed over live workers plus the retired total of exited ones.
    Counter,
    /// A current level: summed over live workers only.
    Gauge,
    /// Buckets, sum and count: merged like counters.
    Histogram,
}

/// One labelled series of a family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// Label name/value pairs (without `le`).
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    /// Counter or gauge value (finite; ignored for histograms).
    #[serde(default)]
    pub value: f64,
    /// Histograms only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<HistogramSample>,
}

/// A histogram's state. The `+Inf` bucket is implied by `count` (JSON has no infinity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramSample {
    /// `(upper bound, cumulative count)` for every finite bound, ascending.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// What the supervisor tells a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorMessage {
    /// Always the first frame: who the worker is and the settings it runs with.
    Configure(Assignment),
    /// The answer to [`WorkerMessage::MetricsRequest`]: the merged text exposition.
    MetricsText {
        /// The request's `id`.
        id: u64,
        /// Prometheus text format, version 0.0.4.
        text: String,
    },
    /// What another worker sent this one with [`WorkerMessage::Forward`].
    Forwarded {
        /// The worker that sent it.
        from_pid: i32,
        /// As sent.
        payload: String,
    },
}

/// The identity and budget the supervisor gives one worker, plus the application's own payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Slot number, 1..=workers: stable across replacements, so logs can say "worker 2".
    pub worker_id: u32,
    /// Configuration generation this worker runs; bumped by every accepted reload.
    pub generation: u64,
    /// Requests after which the worker asks to be recycled (jitter applied); 0 = never.
    pub max_requests: u64,
    /// How often the worker must send a heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Opaque to the supervisor: the application's settings for this generation.
    pub payload: serde_json::Value,
}

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length prefix above [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// A frame whose JSON does not decode as the expected message type.
    #[error("undecodable message: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Serializes one message into a frame ready to write.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain enums cannot fail: they hold no maps with non-string keys.
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Decodes the body of one frame (without its length prefix).
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(body)?)
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces (non-blocking reads).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Appends bytes just read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete frame body, if one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_arbitrary_splits() {
        let msgs = vec![
            WorkerMessage::Ready,
            WorkerMessage::Heartbeat { requests: 7, connections: 2 },
            WorkerMessage::Recycle { requests: 51 },
            WorkerMessage::Metrics {
                families: vec![MetricFamily {
                    name: "h".into(),
                    help: "a \"histogram\"\n".into(),
                    kind: MetricKind::Histogram,
                    samples: vec![MetricSample {
                        labels: vec![("method".into(), "tools/call".into())],
                        value: 0.0,
                        histogram: Some(HistogramSample {
                            buckets: vec![(0.5, 1), (1.0, 2)],
                            sum: 1.25,
                            count: 3,
                        }),
                    }],
                }],
            },
            WorkerMessage::MetricsRequest { id: 9 },
            WorkerMessage::Forward { to_pid: 4242, payload: "{\"id\":\"x\"}".into() },
        ];
        let stream: Vec<u8> = msgs.iter().flat_map(encode).collect();
        for chunk in [1, 3, 5, stream.len()] {
            let mut reader = FrameReader::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                reader.push(piece);
                while let Some(body) = reader.next_frame().unwrap() {
                    got.push(decode::<WorkerMessage>(&body).unwrap());
                }
            }
            assert_eq!(got, msgs, "chunk size {chunk}");
        }
    }

    #[test]
    fn oversized_length_prefix_is_refused() {
        let mut reader = FrameReader::default();
        reader.push(&u32::MAX.to_be_bytes());
        assert!(matches!(reader.next_frame(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn configure_round_trips_with_payload() {
        let msg = SupervisorMessage::Configure(Assignment {
            worker_id: 2,
            generation: 5,
            max_requests: 63,
            heartbeat_interval_ms: 500,
            payload: serde_json::json!({"keepalive": 5.0}),
        });
        let frame = encode(&msg);
        assert_eq!(decode::<SupervisorMessage>(&frame[4..]).unwrap(), msg);
    }
}
