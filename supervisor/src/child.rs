//! The worker's side of the supervisor: taking the inherited descriptors and the assignment.
//!
//! A worker program calls [`Inherited::from_env`] first thing. It learns which descriptors are
//! its listeners and which is its channel from two environment variables the supervisor sets,
//! takes ownership of them (closing them on any later `exec`), and reads its [`Assignment`].

use std::io::{self, Read};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use socket2::Socket;

use crate::ipc::{self, Assignment, SupervisorMessage, MAX_FRAME};

/// Names the descriptor of the worker's end of its channel.
pub const ENV_IPC_FD: &str = "PREFORK_IPC_FD";
/// Comma-separated descriptors of the inherited listeners.
pub const ENV_LISTEN_FDS: &str = "PREFORK_LISTEN_FDS";

/// Everything a worker inherits from its supervisor.
#[derive(Debug)]
pub struct Inherited {
    /// The listening sockets, in `bind` order.
    pub listeners: Vec<Socket>,
    /// The worker's end of the channel, blocking.
    pub ipc: UnixStream,
    /// Who the worker is and what it runs.
    pub assignment: Assignment,
}

/// Why a worker could not take over what its supervisor handed it.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    /// Not started by a supervisor at all.
    #[error("{0} is not set: workers are started by `serve`, not by hand")]
    NotAWorker(&'static str),
    /// A variable that does not hold descriptor numbers.
    #[error("{name} holds {value:?}, not descriptor numbers")]
    BadVariable {
        /// The variable.
        name: &'static str,
        /// What it held.
        value: String,
    },
    /// A descriptor that is closed or is not a socket.
    #[error("inherited descriptor {fd} is unusable: {source}")]
    BadDescriptor {
        /// The descriptor number.
        fd: RawFd,
        /// What the kernel said.
        source: io::Error,
    },
    /// The first frame did not arrive or did not decode.
    #[error("reading the assignment from the supervisor: {0}")]
    Assignment(String),
}

impl Inherited {
    /// Takes the inherited descriptors and reads the assignment (waiting at most `wait`).
    pub fn from_env(wait: Duration) -> Result<Inherited, InheritError> {
        let ipc_raw = var(ENV_IPC_FD)?;
        let ipc_fd = parse_fds(ENV_IPC_FD, &ipc_raw)?
            .first()
            .copied()
            .ok_or(InheritError::BadVariable { name: ENV_IPC_FD, value: ipc_raw.clone() })?;
        let listen_raw = var(ENV_LISTEN_FDS)?;
        let listen_fds = parse_fds(ENV_LISTEN_FDS, &listen_raw)?;
        // SAFETY: the variables are cleared right after, so no one else in this process will
        // claim the same descriptors.
        unsafe {
            std::env::remove_var(ENV_IPC_FD);
            std::env::remove_var(ENV_LISTEN_FDS);
        }
        let ipc = UnixStream::from(take(ipc_fd)?);
        let listeners = listen_fds
            .into_iter()
            .map(|fd| {
                let socket = Socket::from(take(fd)?);
                match socket.is_listener() {
                    Ok(true) => Ok(socket),
                    Ok(false) => Err(InheritError::BadDescriptor {
                        fd,
                        source: io::Error::new(io::ErrorKind::InvalidInput, "not a listening socket"),
                    }),
                    Err(source) => Err(InheritError::BadDescriptor { fd, source }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let assignment = read_assignment(&ipc, wait)?;
        Ok(Inherited { listeners, ipc, assignment })
    }
}

fn var(name: &'static str) -> Result<String, InheritError> {
    std::env::var(name).map_err(|_| InheritError::NotAWorker(name))
}

fn parse_fds(name: &'static str, value: &str) -> Result<Vec<RawFd>, InheritError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|s| s.parse::<RawFd>().ok().filter(|fd| *fd > 2))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| InheritError::BadVariable { name, value: value.to_string() })
}

/// Checks the descriptor is open, marks it close-on-exec and takes ownership.
fn take(fd: RawFd) -> Result<OwnedFd, InheritError> {
    // SAFETY: only borrowed for the duration of the fcntl call; ownership is taken below only
    // once the descriptor is known to be open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| InheritError::BadDescriptor { fd, source: e.into() })?;
    // SAFETY: the supervisor passed this descriptor to this process for it to own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_assignment(ipc: &UnixStream, wait: Duration) -> Result<Assignment, InheritError> {
    let err = |e: io::Error| InheritError::Assignment(e.to_string());
    ipc.set_read_timeout(Some(wait)).map_err(err)?;
    let mut len = [0u8; 4];
    (&*ipc).read_exact(&mut len).map_err(err)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(InheritError::Assignment(format!("frame of {len} bytes is too large")));
    }
    let mut body = vec![0u8; len];
    (&*ipc).read_exact(&mut body).map_err(err)?;
    ipc.set_read_timeout(None).map_err(err)?;
    match ipc::decode::<SupervisorMessage>(&body) {
        Ok(SupervisorMessage::Configure(a)) => Ok(a),
        Ok(other) => Err(InheritError::Assignment(format!("expected the assignment first, got {other:?}"))),
        Err(e) => Err(InheritError::Assignment(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_lists_are_validated() {
        assert_eq!(parse_fds("X", "3,4,10").unwrap(), vec![3, 4, 10]);
        assert!(parse_fds("X", "").unwrap().is_empty());
        for bad in ["a", "3,,4", "-1", "0", "2", "3;4"] {
            assert!(parse_fds("X", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn assignment_is_read_from_the_first_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        let sent = Assignment {
            worker_id: 1,
            generation: 1,
            max_requests: 0,
            heartbeat_interval_ms: 100,
            payload: serde_json::Value::Null,
        };
        (&a).write_all(&ipc::encode(&SupervisorMessage::Configure(sent.clone()))).unwrap();
        assert_eq!(read_assignment(&b, Duration::from_secs(1)).unwrap(), sent);
        drop(a);
        assert!(read_assignment(&b, Duration::from_secs(1)).is_err());
    }

    use std::io::Write;
}
