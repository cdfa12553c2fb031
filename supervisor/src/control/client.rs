//! The side of the control socket that `ctl` uses: connect, send one request, read one answer,
//! and say in words why that failed when it did.

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Command, Response};

/// Longest answer read (a status of 1024 workers is a few hundred kilobytes).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Why the supervisor could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket file at the path.
    #[error("no control socket at {0}: is the service running, and is this the socket its configuration names (control_socket)?")]
    Missing(PathBuf),
    /// The file's mode or owner keeps this user out.
    #[error(
        "permission denied on {path}{owner}: only the user the service runs as, and root, may control it"
    )]
    Denied {
        /// The socket.
        path: PathBuf,
        /// ", owned by uid N" when the owner can be read.
        owner: String,
    },
    /// A socket file nothing listens on.
    #[error("nothing answers on {0}: the supervisor that created it is gone (is the service running?)")]
    NotRunning(PathBuf),
    /// Anything else on the way.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// An answer that is not one.
    #[error(
        "the supervisor's answer is not understood ({0}): is `ctl` from the same release as the service?"
    )]
    BadAnswer(String),
}

/// Sends `command` to the supervisor listening at `path`; waits at most `timeout` for each step.
pub fn call(path: &Path, command: Command, timeout: Duration) -> Result<Response, ClientError> {
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => ClientError::Missing(path.to_path_buf()),
        io::ErrorKind::PermissionDenied => ClientError::Denied {
            path: path.to_path_buf(),
            owner: std::fs::metadata(path).map(|m| format!(", owned by uid {}", m.uid())).unwrap_or_default(),
        },
        io::ErrorKind::ConnectionRefused => ClientError::NotRunning(path.to_path_buf()),
        _ => ClientError::Io { path: path.to_path_buf(), source },
    };
    let mut stream = UnixStream::connect(path).map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    // A refused peer is answered and closed at once: its answer says why, so a failed write
    // is not the end of the story yet.
    let sent = stream.write_all(&command.to_line());
    let mut answer = Vec::new();
    let read = (&mut stream).take(MAX_ANSWER).read_to_end(&mut answer);
    if answer.is_empty() {
        read.and(sent).map_err(io_err)?;
        return Err(ClientError::BadAnswer("the connection closed without an answer".into()));
    }
    let line = answer.split(|b| *b == b'\n').next().unwrap_or_default();
    serde_json::from_slice(line).map_err(|e| ClientError::BadAnswer(e.to_string()))
}
