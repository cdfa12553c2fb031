//! Log output for the supervisor and its workers: JSON lines or text, to stderr or a file that
//! USR1 reopens (so logrotate can move it away without losing lines).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::MakeWriter;
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

/// Installs the global subscriber. Fails only when a log file cannot be opened. Access-log
/// lines (target `access`) go to `access_file` when one is set, else with everything else.
pub fn init(cfg: &LogConfig) -> io::Result<LogHandle> {
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::Layer;

    let filter = EnvFilter::builder().parse_lossy(&cfg.level);
    let (writer, file, terminal) = match &cfg.file {
        Some(path) => {
            let file = ReopenableFile::open(path)?;
            (BoxMakeWriter::new(file.clone()), Some(file), false)
        }
        None => (BoxMakeWriter::new(io::stderr), None, io::stderr().is_terminal()),
    };
    let access = cfg.access_file.as_deref().map(ReopenableFile::open).transpose()?;
    let json = match cfg.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let split = access.is_some();
    let main = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_ansi(terminal).with_writer(writer).boxed()
    };
    let main = main.with_filter(filter.and(filter_fn(move |m| !(split && m.target() == "access"))));
    let access_layer = access.clone().map(|f| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(f)
            // Spans pass too, so the request span (and its request_id) is known to this layer.
            .with_filter(filter_fn(|m| m.is_span() || m.target() == "access"))
    });
    // A second init in one process (tests) keeps the first subscriber; nothing to report.
    drop(tracing_subscriber::registry().with(main).with(access_layer).try_init());
    Ok(LogHandle { file, access })
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

    fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
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

/// One event's writer: holds the shared file only while writing.
struct FileWriter(Arc<Mutex<File>>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

impl<'a> MakeWriter<'a> for ReopenableFile {
    type Writer = FileWriter;

    fn make_writer(&'a self) -> Self::Writer {
        FileWriter(self.file.clone())
    }
}
