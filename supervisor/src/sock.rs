//! Listening sockets: parsing `bind` addresses, binding them, adopting systemd's.
//!
//! The supervisor owns every listener for its whole life and only lends duplicates to workers.
//! When a worker exits, its copy closes but the socket (and its accept queue) lives on in the
//! supervisor, so connections queued meanwhile are accepted by the next worker instead of being
//! reset — the failure gunicorn has because each worker binds its own socket.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, SockAddr, Socket, Type};

/// One address to listen on, as written in the `bind` setting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindAddr {
    /// `HOST:PORT` or `[V6]:PORT`; port 0 asks the kernel for a free one.
    Tcp(SocketAddr),
    /// `unix:/path/to.sock`.
    Unix(PathBuf),
}

/// Why a `bind` value was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an address: expected HOST:PORT, [IPV6]:PORT or unix:/absolute/path")]
pub struct BadBindAddr(pub String);

impl FromStr for BindAddr {
    type Err = BadBindAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(BadBindAddr(s.to_string()));
            }
            return Ok(BindAddr::Unix(path));
        }
        // "localhost" is common in configs; resolving names here would make the bind depend on
        // /etc/hosts, so only this one well-known name is mapped.
        let literal = match s.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => s.to_string(),
        };
        literal.parse::<SocketAddr>().map(BindAddr::Tcp).map_err(|_| BadBindAddr(s.to_string()))
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(addr) => write!(f, "{addr}"),
            BindAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl BindAddr {
    /// True when only this machine can reach the address (loopback IP or a Unix socket).
    pub fn is_local(&self) -> bool {
        match self {
            BindAddr::Tcp(addr) => addr.ip().is_loopback(),
            BindAddr::Unix(_) => true,
        }
    }
}

/// A listening socket held by the supervisor.
#[derive(Debug)]
pub struct Listener {
    /// The address as configured (port 0 stays 0 here, so reloads compare like with like).
    pub configured: BindAddr,
    /// The address actually bound (the real port when 0 was asked for).
    pub local: String,
    fd: OwnedFd,
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Listener {
    /// Binds `addr` with the options a pre-fork server needs.
    pub fn bind(addr: &BindAddr, backlog: i32, reuse_port: bool) -> io::Result<Listener> {
        let socket = match addr {
            BindAddr::Tcp(sa) => {
                let socket = Socket::new(Domain::for_address(*sa), Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                if reuse_port {
                    socket.set_reuse_port(true)?;
                }
                if sa.is_ipv6() {
                    // [::]:8080 should mean IPv6 only, so that 0.0.0.0:8080 can be bound beside it.
                    socket.set_only_v6(true)?;
                }
                socket.bind(&SockAddr::from(*sa))?;
                socket
            }
            BindAddr::Unix(path) => {
                remove_stale_socket(path)?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.bind(&SockAddr::unix(path)?)?;
                socket
            }
        };
        socket.listen(backlog)?;
        let local = describe(&socket);
        Ok(Listener { configured: addr.clone(), local, fd: socket.into() })
    }

    /// Wraps a descriptor inherited from systemd (`LISTEN_FDS`).
    ///
    /// # Safety
    /// `fd` must be an open descriptor that nothing else owns.
    pub unsafe fn adopt(fd: RawFd) -> io::Result<Listener> {
        // SAFETY: the caller guarantees `fd` is open and owned by nobody else.
        let socket = unsafe { Socket::from_raw_fd(fd) };
        if !socket.is_listener()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("inherited descriptor {fd} is not a listening socket"),
            ));
        }
        socket.set_cloexec(true)?;
        let local = describe(&socket);
        let configured = local.parse().unwrap_or_else(|_| BindAddr::Unix(PathBuf::from(&local)));
        Ok(Listener { configured, local, fd: socket.into() })
    }

    /// The raw descriptor, for handing to a worker.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The std listener for a TCP socket, handy for tests and for the bare-hyper benchmark.
    pub fn try_clone_tcp(&self) -> io::Result<TcpListener> {
        Ok(TcpListener::from(self.fd.try_clone()?))
    }
}

/// Set once this process has handed its listeners to an upgraded supervisor: their socket
/// files belong to that one now.
static KEEP_SOCKET_FILES: AtomicBool = AtomicBool::new(false);

/// From now on, dropping a Unix listener leaves its socket file in place (an upgrade handed
/// the socket to a new supervisor, which still listens on it).
pub fn keep_socket_files() {
    KEEP_SOCKET_FILES.store(true, Ordering::SeqCst);
}

impl Drop for Listener {
    fn drop(&mut self) {
        if KEEP_SOCKET_FILES.load(Ordering::SeqCst) {
            return;
        }
        // The socket file of a Unix listener would otherwise stay behind and make the next
        // start think something still listens there.
        if let BindAddr::Unix(path) = &self.configured {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn describe(socket: &Socket) -> String {
    match socket.local_addr() {
        Ok(sa) => match sa.as_socket() {
            Some(inet) => inet.to_string(),
            None => match sa.as_pathname() {
                Some(p) => format!("unix:{}", p.display()),
                None => "unix:(unnamed)".to_string(),
            },
        },
        Err(_) => "(unknown)".to_string(),
    }
}

/// A socket file left by a previous run blocks `bind`; anything else at that path is not ours
/// to delete.
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes the sockets systemd passed (`LISTEN_FDS`/`LISTEN_PID`), if any, and clears those
/// variables so workers do not try to adopt them again.
pub fn adopt_systemd_listeners() -> io::Result<Option<Vec<Listener>>> {
    let fds: Vec<RawFd> = sd_notify::listen_fds()?.collect();
    // SAFETY: clearing the variables before any thread exists; the supervisor is single-threaded.
    unsafe {
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if fds.is_empty() {
        return Ok(None);
    }
    let mut listeners = Vec::with_capacity(fds.len());
    for fd in fds {
        // SAFETY: systemd hands these descriptors to this process alone.
        listeners.push(unsafe { Listener::adopt(fd)? });
    }
    Ok(Some(listeners))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_address_forms() {
        assert_eq!("127.0.0.1:80".parse::<BindAddr>().unwrap().to_string(), "127.0.0.1:80");
        assert_eq!("[::1]:8080".parse::<BindAddr>().unwrap().to_string(), "[::1]:8080");
        assert_eq!("localhost:9".parse::<BindAddr>().unwrap().to_string(), "127.0.0.1:9");
        assert_eq!(
            "unix:/run/a.sock".parse::<BindAddr>().unwrap(),
            BindAddr::Unix(PathBuf::from("/run/a.sock"))
        );
        for bad in ["", "8080", "example.com:80", "unix:relative.sock", "1.2.3.4", "[::1]"] {
            assert!(bad.parse::<BindAddr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn loopback_and_unix_are_local() {
        assert!("127.0.0.1:1".parse::<BindAddr>().unwrap().is_local());
        assert!("[::1]:1".parse::<BindAddr>().unwrap().is_local());
        assert!("unix:/x".parse::<BindAddr>().unwrap().is_local());
        assert!(!"0.0.0.0:1".parse::<BindAddr>().unwrap().is_local());
    }

    #[test]
    fn binds_port_zero_and_reports_the_real_port() {
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 16, true).unwrap();
        assert!(!l.local.ends_with(":0"), "{}", l.local);
        assert_eq!(l.configured.to_string(), "127.0.0.1:0");
    }

    #[test]
    fn unix_listener_replaces_stale_socket_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let addr = BindAddr::Unix(path.clone());
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "std leaves the socket file behind");
        let l = Listener::bind(&addr, 16, false).unwrap();
        drop(l);
        assert!(!path.exists());
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(Listener::bind(&addr, 16, false).is_err());
    }
}
