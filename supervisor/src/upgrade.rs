//! Binary upgrade (USR2), in the shape of nginx's: the running supervisor starts the binary at
//! its path again and hands it the listening sockets; the new one boots its workers and says
//! READY; only then does the old one drain and exit. A new binary that cannot boot just exits,
//! and the old one keeps serving.
//!
//! The sockets are passed the systemd way (`LISTEN_FDS`, descriptors 3, 4, …), so the new
//! supervisor adopts them with the same code as sockets from systemd, and they never close:
//! both supervisors hold them during the handover. `LISTEN_PID` must name the new process,
//! which only it knows after `exec`: the old one sets [`ENV_UPGRADE_FROM`] to its own pid, and
//! the new one, finding that its parent is that pid, sets `LISTEN_PID` to itself
//! ([`Predecessor::from_env`]) before adopting. One more descriptor, [`ENV_UPGRADE_FD`], is a
//! channel back to the old supervisor: the new one writes [`READY`] on it once every worker is
//! ready. (These variables are not `AWSWHITELIST_*`: every such variable is a config key.)

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::libc;
use nix::unistd::{getppid, Pid};
use tracing::warn;

/// Environment variable naming the pid of the supervisor that started this one for an upgrade.
pub const ENV_UPGRADE_FROM: &str = "AWSWL_UPGRADE_FROM";
/// Environment variable naming the descriptor on which the new supervisor reports READY.
pub const ENV_UPGRADE_FD: &str = "AWSWL_UPGRADE_FD";
/// What the new supervisor writes on the channel once every worker is ready.
pub const READY: &[u8] = b"READY\n";
/// The first descriptor of `LISTEN_FDS` (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The binary to start again on USR2 and its arguments, captured when the supervisor started.
///
/// The path is resolved at start: once the file is replaced, `/proc/self/exe` names the old,
/// deleted inode, while the path names the new file, which is what an upgrade must run.
#[derive(Debug, Clone)]
pub struct Successor {
    /// The binary's path.
    pub program: PathBuf,
    /// Its arguments (without argv\[0\]).
    pub args: Vec<OsString>,
}

impl Successor {
    /// This process's binary and arguments, if its path can be resolved.
    pub fn current() -> Option<Successor> {
        let program = std::env::current_exe().ok()?;
        Some(Successor { program, args: std::env::args_os().skip(1).collect() })
    }
}

/// A new supervisor that the old one started and is waiting for.
#[derive(Debug)]
pub struct InFlight {
    /// The new supervisor's pid.
    pub pid: Pid,
    /// Our end of the channel; `None` once the new one closed it.
    channel: Option<UnixStream>,
    /// What arrived on the channel so far.
    got: Vec<u8>,
    /// When the new supervisor is killed if it has not said READY.
    pub deadline: Instant,
}

impl InFlight {
    /// The descriptor to poll, while the channel is open.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.channel.as_ref().map(|c| c.as_fd())
    }

    /// Reads what the new supervisor wrote; true once it said READY. The channel is dropped at
    /// end of file (the process exit is what reports a failure).
    pub fn read(&mut self) -> bool {
        let Some(channel) = self.channel.as_mut() else {
            return self.is_ready();
        };
        let mut buf = [0u8; 64];
        loop {
            match channel.read(&mut buf) {
                Ok(0) => {
                    self.channel = None;
                    break;
                }
                Ok(n) if self.got.len() < 1024 => self.got.extend_from_slice(&buf[..n]),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // WouldBlock: all read for now.
            }
        }
        self.is_ready()
    }

    fn is_ready(&self) -> bool {
        self.got.starts_with(READY)
    }
}

/// Starts `successor` with the listeners `listen_fds` passed as `LISTEN_FDS` and a channel to
/// report READY on. The new process keeps our stdout/stderr and environment (`NOTIFY_SOCKET`
/// included), and is not killed when we exit: after the handover it is the service.
pub fn start(successor: &Successor, listen_fds: &[RawFd], deadline: Instant) -> io::Result<InFlight> {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    let count = listen_fds.len() as RawFd;
    let channel_fd = LISTEN_FDS_START + count;
    // Copies above every target number, so that placing one at its target (dup2) can never
    // overwrite a descriptor still to be placed. They are close-on-exec and closed when this
    // function returns; the copies dup2 makes in the child are not.
    let above = channel_fd + 1;
    let mut staged: Vec<OwnedFd> = Vec::with_capacity(listen_fds.len() + 1);
    for fd in listen_fds.iter().copied().chain(std::iter::once(theirs.as_raw_fd())) {
        // SAFETY: `fd` is open for the duration of this call (the caller's listeners, our pair).
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let copy = fcntl(borrowed, FcntlArg::F_DUPFD_CLOEXEC(above)).map_err(io::Error::from)?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        staged.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    let sources: Vec<RawFd> = staged.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut cmd = Command::new(&successor.program);
    cmd.args(&successor.args)
        .env("LISTEN_FDS", count.to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env(ENV_UPGRADE_FROM, std::process::id().to_string())
        .env(ENV_UPGRADE_FD, channel_fd.to_string())
        .stdin(Stdio::null());
    // SAFETY: the closure runs between fork and exec and only calls dup2, which is
    // async-signal-safe; it reads a vector allocated before the fork and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for (i, src) in sources.iter().enumerate() {
                if libc::dup2(*src, LISTEN_FDS_START + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    drop(staged);
    let pid = Pid::from_raw(child.id() as i32);
    // The supervisor reaps every child with waitpid itself; the handle is not needed.
    drop(child);
    Ok(InFlight { pid, channel: Some(ours), got: Vec::new(), deadline })
}

/// In a supervisor started by an upgrade: the old supervisor and the channel to it.
#[derive(Debug)]
pub struct Predecessor {
    /// The old supervisor's pid.
    pub pid: Pid,
    channel: std::fs::File,
}

impl Predecessor {
    /// Takes the upgrade variables out of the environment (so workers never see them) and, if
    /// this process really is the upgrade child of the pid they name, sets `LISTEN_PID` so the
    /// inherited sockets are adopted. Must run before the listeners are adopted, while the
    /// process is single-threaded.
    pub fn from_env() -> Option<Predecessor> {
        let from = std::env::var(ENV_UPGRADE_FROM).ok();
        let fd = std::env::var(ENV_UPGRADE_FD).ok();
        // SAFETY: called at start, before any thread exists.
        unsafe {
            std::env::remove_var(ENV_UPGRADE_FROM);
            std::env::remove_var(ENV_UPGRADE_FD);
        }
        let (from, fd) = (from?, fd?);
        let (Ok(pid), Ok(fd)) = (from.parse::<i32>(), fd.parse::<RawFd>()) else {
            warn!(
                event = "upgrade_env_ignored",
                "{ENV_UPGRADE_FROM}/{ENV_UPGRADE_FD} are not numbers; ignored"
            );
            return None;
        };
        if getppid().as_raw() != pid || fd < LISTEN_FDS_START {
            warn!(
                event = "upgrade_env_ignored",
                from = pid,
                "{ENV_UPGRADE_FROM} does not name this process's parent; ignored"
            );
            return None;
        }
        // SAFETY: the parent placed the channel at `fd` for this process alone.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).ok()?;
        // SAFETY: as above; from here on this value owns it.
        let channel = unsafe { std::fs::File::from_raw_fd(fd) };
        // SAFETY: still single-threaded (see above).
        unsafe { std::env::set_var("LISTEN_PID", std::process::id().to_string()) };
        Some(Predecessor { pid: Pid::from_raw(pid), channel })
    }

    /// Tells the old supervisor that this one serves: it drains and exits.
    pub fn ready(mut self) -> io::Result<()> {
        self.channel.write_all(READY)
    }
}

/// Where the old supervisor's pidfile goes while an upgrade is in flight (nginx's `.oldbin`).
pub fn oldbin(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_os_string();
    name.push(".oldbin");
    PathBuf::from(name)
}
