//! Log output for the supervisor and its workers: JSON lines or text, to stderr or a file that
//! USR1 reopens (so logrotate can move it away without losing lines).
//!
//! In a worker ([`init_batched`]), lines never wait for the disk (or a slow journal) on the
//! request path: each is appended to a buffer in memory, and a thread writes the buffer out every
//! [`FLUSH_EVERY`] — in pieces of
//! whole lines of at most `PIPE_BUF` bytes, so lines of the supervisor and its workers sharing
//! a pipe or an `O_APPEND` file never interleave, as when each line was written alone. The
//! buffer is written out before a reopen (to the old file), at exit (`atexit`, which
//! `std::process::exit` runs too: drain, fast exit, the end of `main`), and at once should it
//! ever grow past [`BUFFER_MAX`]. Only a process killed outright loses its last lines. The
//! supervisor and the other commands ([`init`]) write each line at once, as it comes.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Keeps what is needed to reopen the log files later.
#[derive(Clone, Default)]
pub struct LogHandle {
    file: Option<ReopenableFile>,
    access: Option<ReopenableFile>,
}

impl LogHandle {
    /// Reopens the log files at their paths; lines keep going to the old file if that fails.
    pub fn reopen(&self) {
        for f in self.file.iter().chain(&self.access) {
            if let Err(e) = f.reopen() {
                tracing::error!(path = %f.path.display(), error = %e, "cannot reopen log file; still writing to the old one");
            }
        }
    }
}

/// Installs the global subscriber, writing each line at once. Fails only when a log file cannot
/// be opened. Access-log lines (target `access`) go to `access_file` when one is set, else with
/// everything else.
pub fn init(cfg: &LogConfig) -> io::Result<LogHandle> {
    init_with(cfg, false)
}

/// Like [`init`], for a worker: lines are buffered and written in batches (see the module doc).
pub fn init_batched(cfg: &LogConfig) -> io::Result<LogHandle> {
    init_with(cfg, true)
}

fn init_with(cfg: &LogConfig, batched: bool) -> io::Result<LogHandle> {
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::Layer;

    let filter = EnvFilter::builder().parse_lossy(&cfg.level);
    let (main_batch, file, terminal) = match &cfg.file {
        Some(path) => {
            let file = ReopenableFile::open(path)?;
            (Batch::start(Some(file.clone()), batched), Some(file), false)
        }
        None => (Batch::start(None, batched), None, io::stderr().is_terminal()),
    };
    let writer = BoxMakeWriter::new(main_batch.clone());
    let access = cfg.access_file.as_deref().map(ReopenableFile::open).transpose()?;
    let access_writer = access.clone().map(|f| Batch::start(Some(f), batched));
    let json = match cfg.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let split = access_writer.is_some();
    // Access lines are JSON in an access file, and in a JSON log: they skip tracing's formatter
    // (see `worker::http::send_json_lines_to`). In a text log they stay events.
    if let Some(to) = access_writer.or(json.then_some(main_batch)) {
        worker::http::send_json_lines_to(
            Box::new(move |line| {
                let _ = to.make_writer().write_all(line);
            }),
            !split,
        );
    }
    let main = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(SpanJson)
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_ansi(terminal).with_writer(writer).boxed()
    };
    let main = main.with_filter(filter.and(filter_fn(move |m| !(split && m.target() == "access"))));
    // A second init in one process (tests) keeps the first subscriber; nothing to report.
    drop(tracing_subscriber::registry().with(main).try_init());
    Ok(LogHandle { file, access })
}

/// Span fields as a JSON object that a `record` extends in place. tracing-subscriber's own
/// `JsonFields` parses a span's whole field text and serialises it again on every `record`,
/// which every MCP request does once (its method): 2–3 % of a worker's time in issue 12's
/// profile. The JSON event formatter reads the object back the same way; a field recorded
/// twice appears twice and the later value wins when it is read.
struct SpanJson;

impl<'w> FormatFields<'w> for SpanJson {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        // Room for a request span's fields, so the text is allocated once.
        let mut text = Vec::with_capacity(128);
        text.push(b'{');
        let mut object = JsonObject { text, empty: true };
        fields.record(&mut object);
        object.text.push(b'}');
        writer.write_str(&object.into_text())
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &Record<'_>) -> fmt::Result {
        let mut text = std::mem::take(&mut current.fields).into_bytes();
        if text.pop() != Some(b'}') {
            return self.format_fields(current.as_writer(), fields);
        }
        let empty = text == b"{";
        let mut object = JsonObject { text, empty };
        fields.record(&mut object);
        object.text.push(b'}');
        current.fields = object.into_text();
        Ok(())
    }
}

/// Writes visited fields as `"name":value` members (the closing brace is the caller's),
/// serialised straight into one buffer.
struct JsonObject {
    text: Vec<u8>,
    empty: bool,
}

impl JsonObject {
    fn member(&mut self, field: &Field, value: impl serde::Serialize) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let start = self.text.len();
        if !self.empty {
            self.text.push(b',');
        }
        let written = serde_json::to_writer(&mut self.text, name).and_then(|()| {
            self.text.push(b':');
            serde_json::to_writer(&mut self.text, &value)
        });
        match written {
            Ok(()) => self.empty = false,
            // Serialising a name or a plain value cannot fail; if it ever did, the field is
            // left out rather than half written.
            Err(_) => self.text.truncate(start),
        }
    }

    /// The text; serde_json writes only UTF-8, so the check cannot fail (an empty object if
    /// it ever did).
    fn into_text(self) -> String {
        String::from_utf8(self.text).unwrap_or_else(|_| "{}".to_string())
    }
}

impl Visit for JsonObject {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, value)
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, value)
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, value)
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, value)
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, value)
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, DebugText(value))
    }
}

/// A `Debug` value serialised as the string it writes, without an intermediate `String`.
struct DebugText<'a>(&'a dyn fmt::Debug);

impl serde::Serialize for DebugText<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:?}", self.0))
    }
}

/// A log file shared by every write, swapped for a fresh handle on reopen.
#[derive(Clone)]
struct ReopenableFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl ReopenableFile {
    fn open(path: &Path) -> io::Result<ReopenableFile> {
        Ok(ReopenableFile { path: path.to_path_buf(), file: Arc::new(Mutex::new(open_append(path)?)) })
    }

    /// Writes what is buffered for this file to the old one, then swaps in a fresh handle.
    fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        flush_all();
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

/// O_APPEND: the supervisor and every worker append whole lines to the same file.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open log file {}: {e}", path.display())))
}

/// How often buffered lines are written out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(25);
/// Buffered bytes past which the writing event writes the buffer out itself.
pub const BUFFER_MAX: usize = 1 << 20;
/// Largest write the kernel keeps whole on a pipe; batches are cut into whole lines below it.
const PIPE_BUF: usize = 4096;

/// Lines waiting to be written, and where they go (the file, else stderr).
struct Batch {
    pending: Mutex<Vec<u8>>,
    /// Held across taking and writing a batch, so batches keep their order.
    writing: Mutex<()>,
    file: Option<ReopenableFile>,
    /// False: each line is written at once, by the thread that logs it.
    batched: bool,
}

/// Every batch of this process: the flusher thread and `atexit` write them all out.
static BATCHES: OnceLock<Mutex<Vec<Arc<Batch>>>> = OnceLock::new();

fn batches() -> &'static Mutex<Vec<Arc<Batch>>> {
    BATCHES.get_or_init(|| {
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_EVERY);
                flush_all();
            })
            .ok();
        extern "C" fn at_exit() {
            flush_all();
        }
        // SAFETY: registering a plain function with no preconditions; it only takes locks
        // that no thread holds across an exit (a poisoned one is recovered).
        unsafe { nix::libc::atexit(at_exit) };
        Mutex::new(Vec::new())
    })
}

/// Writes out every buffered line of this process.
pub fn flush_all() {
    let all: Vec<Arc<Batch>> = batches().lock().unwrap_or_else(PoisonError::into_inner).clone();
    for b in all {
        b.flush();
    }
}

impl Batch {
    fn start(file: Option<ReopenableFile>, batched: bool) -> Batched {
        let batch =
            Arc::new(Batch { pending: Mutex::new(Vec::new()), writing: Mutex::new(()), file, batched });
        if batched {
            batches().lock().unwrap_or_else(PoisonError::into_inner).push(batch.clone());
        }
        Batched(batch)
    }

    fn flush(&self) {
        let _order = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let lines = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if lines.is_empty() {
            return;
        }
        // A log that cannot be written has nowhere to report it: the lines are dropped.
        let _ = self.write_now(&lines);
    }

    /// Writes `lines` to the file or stderr (the caller holds `writing`).
    fn write_now(&self, lines: &[u8]) -> io::Result<()> {
        match &self.file {
            Some(f) => write_lines(&mut *f.file.lock().unwrap_or_else(PoisonError::into_inner), lines),
            None => write_lines(&mut io::stderr().lock(), lines),
        }
    }
}

/// Writes `lines` in pieces of whole lines of at most `PIPE_BUF` bytes (a longer line alone).
fn write_lines(out: &mut dyn Write, mut lines: &[u8]) -> io::Result<()> {
    while !lines.is_empty() {
        let window = &lines[..lines.len().min(PIPE_BUF)];
        let cut = match window.iter().rposition(|&b| b == b'\n') {
            Some(i) if lines.len() > PIPE_BUF => i + 1,
            _ if lines.len() <= PIPE_BUF => lines.len(),
            // One line longer than PIPE_BUF: to its end.
            _ => lines.iter().position(|&b| b == b'\n').map_or(lines.len(), |i| i + 1),
        };
        out.write_all(&lines[..cut])?;
        lines = &lines[cut..];
    }
    out.flush()
}

/// One event's writer: adds its bytes (one whole line: the formatter writes each event at
/// once) to the batch.
struct BatchWriter(Arc<Batch>);

impl Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.0.batched {
            let _order = self.0.writing.lock().unwrap_or_else(PoisonError::into_inner);
            self.0.write_now(buf)?;
            return Ok(buf.len());
        }
        let full = {
            let mut pending = self.0.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.extend_from_slice(buf);
            pending.len() > BUFFER_MAX
        };
        if full {
            self.0.flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer factory the log layers are given: one batch.
#[derive(Clone)]
struct Batched(Arc<Batch>);

impl<'a> MakeWriter<'a> for Batched {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        BatchWriter(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_at_line_ends_below_pipe_buf() {
        let line = |n: usize| {
            let mut l = vec![b'x'; n];
            l.push(b'\n');
            l
        };
        let text: Vec<u8> = (0..100).flat_map(|i| line(50 + i)).chain(line(9000)).chain(line(10)).collect();
        struct Pieces(Vec<Vec<u8>>);
        impl Write for Pieces {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.push(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = Pieces(Vec::new());
        write_lines(&mut out, &text).unwrap();
        assert_eq!(out.0.concat(), text, "nothing lost or reordered");
        for piece in &out.0 {
            assert!(piece.ends_with(b"\n"), "a piece ends mid-line");
            assert!(piece.len() <= PIPE_BUF || piece.iter().filter(|&&b| b == b'\n').count() == 1);
        }
    }

    /// Events inside a span carry its fields, those recorded later too, escaped, as JSON.
    #[test]
    fn span_fields_are_json_that_a_record_extends() {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl Write for Lines {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let out = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(SpanJson)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = "a\"b",
                n = 7u64,
                ok = true,
                later = tracing::field::Empty,
                none = tracing::field::Empty
            );
            span.in_scope(|| tracing::info!("before"));
            span.record("later", "tools/call");
            span.in_scope(|| tracing::info!("after"));
            let empty = tracing::info_span!("bare", only = tracing::field::Empty);
            empty.record("only", 1.5);
            empty.in_scope(|| tracing::info!("bare"));
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let spans: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["span"].clone())
            .collect();
        assert_eq!(
            spans[0],
            serde_json::json!({"name": "request", "request_id": "a\"b", "n": 7, "ok": true})
        );
        assert_eq!(
            spans[1],
            serde_json::json!({"name": "request", "request_id": "a\"b", "n": 7, "ok": true, "later": "tools/call"})
        );
        assert_eq!(spans[2], serde_json::json!({"name": "bare", "only": 1.5}));
    }

    #[test]
    fn a_reopen_writes_the_old_files_lines_to_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let file = ReopenableFile::open(&path).unwrap();
        let batch = Batch::start(Some(file.clone()), true);
        batch.make_writer().write_all(b"before\n").unwrap();
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        file.reopen().unwrap();
        batch.make_writer().write_all(b"after\n").unwrap();
        flush_all();
        assert_eq!(std::fs::read_to_string(dir.path().join("a.log.1")).unwrap(), "before\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
    }
}
