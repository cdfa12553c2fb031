//! Starting one worker process: descriptors, environment, privileges, parent-death signal.
//!
//! The worker is a fresh `exec` of a program (normally this binary), never a bare `fork` of the
//! supervisor: it builds its own runtime from nothing, so no thread, lock or epoll instance of
//! the supervisor leaks into it.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::Signal;
use nix::unistd::{getppid, setgid, setgroups, setuid, Gid, Pid, Uid};

use crate::child::{ENV_IPC_FD, ENV_LISTEN_FDS};
use crate::ipc::{self, Assignment, SupervisorMessage};

/// The user and group workers drop to after the supervisor has bound its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric primary group id (also the only supplementary group).
    pub gid: u32,
}

/// What to start, and what it inherits.
pub struct SpawnRequest<'a> {
    /// Program to execute.
    pub program: &'a PathBuf,
    /// Its arguments.
    pub args: &'a [OsString],
    /// Listener descriptors the worker inherits.
    pub listen_fds: Vec<RawFd>,
    /// Identity and settings sent as the first frame.
    pub assignment: Assignment,
    /// Privileges to drop to, if any.
    pub run_as: Option<RunAs>,
}

/// A started worker: its pid and the supervisor's end of its channel.
pub struct Spawned {
    /// The worker's process id.
    pub pid: Pid,
    /// The supervisor's end of the private channel, non-blocking.
    pub ipc: UnixStream,
}

/// Starts one worker and sends it its assignment.
pub fn spawn(req: SpawnRequest<'_>) -> io::Result<Spawned> {
    let (ours, theirs) = UnixStream::pair()?;
    let ipc_fd = theirs.as_raw_fd();
    let listen_fds = req.listen_fds.clone();
    let parent = Pid::this();
    let run_as = req.run_as;

    let mut cmd = Command::new(req.program);
    cmd.args(req.args)
        .env(ENV_IPC_FD, ipc_fd.to_string())
        .env(ENV_LISTEN_FDS, join(&listen_fds))
        // These belong to the supervisor: a worker must neither re-adopt the listeners nor
        // speak to systemd on the service's behalf.
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (fcntl, setgroups, setgid, setuid, prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Descriptors are close-on-exec in the supervisor so that no worker inherits another
            // worker's channel; clear the flag on exactly the ones this worker must keep.
            for fd in listen_fds.iter().copied().chain(std::iter::once(ipc_fd)) {
                let borrowed = std::os::fd::BorrowedFd::borrow_raw(fd);
                fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty()))?;
            }
            if let Some(user) = run_as {
                setgroups(&[Gid::from_raw(user.gid)])?;
                setgid(Gid::from_raw(user.gid))?;
                setuid(Uid::from_raw(user.uid))?;
            }
            // After the credential change, which clears it: a worker whose supervisor vanished
            // (SIGKILL, OOM) drains and exits instead of serving unsupervised forever.
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            if getppid() != parent {
                return Err(io::Error::other("supervisor exited during spawn"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    let pid = Pid::from_raw(child.id() as i32);
    // The channel's buffer is empty, so this small first frame cannot block for long; the
    // timeout guards against a kernel buffer smaller than any sane one.
    ours.set_write_timeout(Some(Duration::from_secs(5)))?;
    (&ours).write_all(&ipc::encode(&SupervisorMessage::Configure(req.assignment)))?;
    ours.set_nonblocking(true)?;
    Ok(Spawned { pid, ipc: ours })
}

fn join(fds: &[RawFd]) -> String {
    fds.iter().map(|fd| fd.to_string()).collect::<Vec<_>>().join(",")
}
