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

/// Keeps what is needed to reopen the log file later.
#[derive(Clone, Default)]
pub struct LogHandle {
    file: Option<ReopenableFile>,
}

impl LogHandle {
    /// Reopens the log file at its path; lines keep going to the old file if that fails.
    pub fn reopen(&self) {
        if let Some(f) = &self.file {
            if let Err(e) = f.reopen() {
                tracing::error!(path = %f.path.display(), error = %e, "cannot reopen log file; still writing to the old one");
            }
        }
    }
}

/// Installs the global subscriber. Fails only when the log file cannot be opened.
pub fn init(cfg: &LogConfig) -> io::Result<LogHandle> {
    let filter = EnvFilter::builder().parse_lossy(&cfg.level);
    let (writer, handle, terminal) = match &cfg.file {
        Some(path) => {
            let file = ReopenableFile::open(path)?;
            (BoxMakeWriter::new(file.clone()), LogHandle { file: Some(file) }, false)
        }
        None => (BoxMakeWriter::new(io::stderr), LogHandle::default(), io::stderr().is_terminal()),
    };
    let json = match cfg.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let result = if json {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.with_ansi(terminal).try_init()
    };
    // A second init in one process (tests) keeps the first subscriber; nothing to report.
    drop(result);
    Ok(handle)
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
