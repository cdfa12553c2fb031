//! The supervisor's side of the control socket: creating it safely, checking who connects, and
//! reading requests and writing answers without ever blocking the main loop.
//!
//! The main loop polls the listener and every client with its other descriptors; a client gets
//! [`CLIENT_DEADLINE`] for the whole exchange and [`MAX_REQUEST`] bytes for its request, and at
//! most [`MAX_CLIENTS`] are served at once, so a slow or hostile client costs a descriptor
//! for a few seconds, never a stalled supervisor.
//!
//! The socket file is created at a random name beside its path with umask 0177 (so it is born
//! 0600; `fchmod` on a socket does not reach the file), then renamed over the path: `bind` never
//! follows a symlink, `rename` replaces one rather than following it, and an upgrade replaces
//! the old supervisor's socket without a moment when there is none. An existing file at the
//! path is replaced only when it is a socket of this uid that nothing answers on (or, for an
//! upgrade, the old supervisor's); on exit the file is removed only if it is still the one this
//! process created.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::{umask, Mode};
use nix::unistd::Uid;
use tracing::warn;

use super::{parse_request, Command, Response, MAX_REQUEST};

/// How long one client may take to send its request and read the answer.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// Clients served at once; more are told to retry.
pub const MAX_CLIENTS: usize = 8;
/// Longest path a Unix socket address holds (`sun_path` less its NUL), less the temp suffix.
pub const MAX_PATH: usize = 107 - TEMP_SUFFIX;
/// Bytes the temporary name adds to the path (`.` and 8 hex digits).
const TEMP_SUFFIX: usize = 9;

/// The listening control socket and its clients.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the file this process created, to remove only that one.
    file: (u64, u64),
    /// The supervisor's effective uid: the one peer (besides root) that may connect.
    owner: u32,
    clients: Vec<Client>,
    next_id: u64,
}

/// One connection, from accept to its answer.
struct Client {
    id: u64,
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    deadline: Instant,
    /// The request was read: nothing more is read, and the connection closes once the answer
    /// is written.
    answered: bool,
    /// End of file, an error, or an answer fully written.
    done: bool,
}

/// A request to act on.
#[derive(Debug)]
pub struct Incoming {
    /// Pass it to [`ControlSocket::answer`].
    pub id: u64,
    /// What was asked, or why it cannot be read (answered as an error).
    pub request: Result<Command, String>,
    /// The peer's uid and pid, for the log.
    pub peer: (u32, i32),
}

impl ControlSocket {
    /// Creates the socket at `path` (mode 0600). `takeover`: a live socket there is the old
    /// supervisor's, handing over to this one in an upgrade; otherwise a live socket means
    /// another instance runs, and is an error.
    pub fn open(path: &Path, takeover: bool) -> io::Result<ControlSocket> {
        Self::create(path, takeover).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    fn create(path: &Path, takeover: bool) -> io::Result<ControlSocket> {
        let owner = Uid::effective().as_raw();
        if path.as_os_str().len() > MAX_PATH {
            return Err(refusal(format!("the path is longer than {MAX_PATH} bytes")));
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                if !meta.file_type().is_socket() {
                    return Err(refusal("it exists and is not a socket; not touching it".into()));
                }
                if meta.uid() != owner {
                    return Err(refusal(format!(
                        "it belongs to uid {}, not to this process's uid {owner}; not replacing it",
                        meta.uid()
                    )));
                }
                if !takeover && UnixStream::connect(path).is_ok() {
                    return Err(refusal("another supervisor answers on it (is the service already running?); stop that one, or set control_socket to another path".into()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (listener, tmp) = bind_private(path)?;
        let meta = std::fs::symlink_metadata(&tmp)?;
        let file = (meta.dev(), meta.ino());
        let checked = if meta.mode() & 0o077 != 0 {
            Err(refusal(format!("the new socket has mode {:o}, not 0600", meta.mode() & 0o777)))
        } else {
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = checked.and_then(|()| listener.set_nonblocking(true)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(ControlSocket { listener, path: path.to_path_buf(), file, owner, clients: Vec::new(), next_id: 0 })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptors to poll: the listener first, then each client in order.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        for c in &self.clients {
            let events = if c.outbuf.is_empty() { PollFlags::POLLIN } else { PollFlags::POLLOUT };
            fds.push(PollFd::new(c.stream.as_fd(), events));
        }
        fds
    }

    /// Acts on what poll reported for the descriptors of [`ControlSocket::poll_fds`] (same
    /// order): reads requests, writes answers, accepts newcomers. Returns the requests read.
    pub fn on_events(&mut self, revents: &[PollFlags]) -> Vec<Incoming> {
        let mut incoming = Vec::new();
        for (c, events) in self.clients.iter_mut().zip(revents.iter().skip(1)) {
            if events.is_empty() {
                continue;
            }
            if events.contains(PollFlags::POLLOUT) {
                c.flush();
            } else if !c.answered {
                if let Some(request) = c.read_request() {
                    let peer = peer_of(&c.stream).unwrap_or((u32::MAX, 0));
                    incoming.push(Incoming { id: c.id, request, peer });
                }
            } else {
                // Hang-up or error after the request: nothing more to read.
                c.done = c.outbuf.is_empty() || events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR);
            }
        }
        if revents.first().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
            self.accept_all();
        }
        self.clients.retain(|c| !c.done);
        incoming
    }

    /// Queues the answer to request `id` and writes what the socket takes now; the connection
    /// closes once all of it is written.
    pub fn answer(&mut self, id: u64, response: &Response) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.id == id) {
            c.outbuf = response.to_line();
            c.answered = true;
            c.flush();
        }
        self.clients.retain(|c| !c.done);
    }

    /// When the oldest client runs out of time, if any is connected.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|c| c.deadline).min()
    }

    /// Drops the clients whose time is up.
    pub fn expire(&mut self, now: Instant) {
        self.clients.retain(|c| c.deadline > now);
    }

    /// Accepts every pending connection; refuses other users and clients beyond the limit
    /// with a one-line answer.
    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: all taken. Anything else (EMFILE…) is retried on the next wake-up.
                Err(_) => return,
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let refusal = match peer_of(&stream) {
                Some((uid, _)) if uid == self.owner || uid == 0 => None,
                Some((uid, pid)) => {
                    warn!(
                        event = "control_refused",
                        uid,
                        peer_pid = pid,
                        "control socket: refused uid {uid} (pid {pid})"
                    );
                    Some(format!(
                        "uid {uid} may not control this service: only its own user (uid {}) and root may",
                        self.owner
                    ))
                }
                None => Some("the peer's credentials cannot be read".to_string()),
            };
            let refusal = refusal.or_else(|| {
                (self.clients.len() >= MAX_CLIENTS)
                    .then(|| format!("busy: {MAX_CLIENTS} control requests in progress; try again"))
            });
            if let Some(reason) = refusal {
                // A fresh socket's buffer takes this short line whole; if not, the peer was
                // going to be refused anyway.
                let _ = (&stream).write(&Response::error(reason).to_line());
                continue;
            }
            self.next_id += 1;
            self.clients.push(Client {
                id: self.next_id,
                stream,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                deadline: Instant::now() + CLIENT_DEADLINE,
                answered: false,
                done: false,
            });
        }
    }
}

impl Client {
    /// Reads what arrived; the request once its line is complete (or an error to answer).
    fn read_request(&mut self) -> Option<Result<Command, String>> {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    // Closed before a whole line: nobody to answer.
                    self.done = true;
                    return None;
                }
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.done = true;
                    return None;
                }
            }
            if let Some(end) = self.inbuf.iter().position(|b| *b == b'\n') {
                return Some(parse_request(&self.inbuf[..end]));
            }
            if self.inbuf.len() > MAX_REQUEST {
                return Some(Err(format!("request longer than {MAX_REQUEST} bytes")));
            }
        }
        None
    }

    /// Writes as much of the answer as the socket takes without blocking.
    fn flush(&mut self) {
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(0) => break,
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.done = true;
                    return;
                }
            }
        }
        if self.answered && self.outbuf.is_empty() {
            self.done = true;
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Still the file this process created? After an upgrade's handover the path holds the
        // new supervisor's socket, which must stay.
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A listener bound at a fresh random name beside `path`, born 0600; returns it and the name.
fn bind_private(path: &Path) -> io::Result<(UnixListener, PathBuf)> {
    for _ in 0..8 {
        let mut name = path.as_os_str().to_os_string();
        name.push(format!(".{:08x}", rand::random::<u32>()));
        let tmp = PathBuf::from(name);
        // The supervisor is single-threaded: the mask is its own for these two calls.
        let previous = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(&tmp);
        umask(previous);
        match bound {
            Ok(l) => return Ok((l, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(refusal("no free temporary name beside it".into()))
}

/// The uid and pid of the process at the other end.
fn peer_of(stream: &UnixStream) -> Option<(u32, i32)> {
    getsockopt(stream, PeerCredentials).ok().map(|c| (c.uid(), c.pid()))
}

fn refusal(why: String) -> io::Error {
    io::Error::other(why)
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::control::{client, Accepted};

    /// One poll of everything `sock` watches, and the requests it read.
    fn poll_once(sock: &mut ControlSocket) -> Vec<Incoming> {
        let revents: Vec<PollFlags> = {
            let mut fds = sock.poll_fds();
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16)).unwrap();
            fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect()
        };
        sock.on_events(&revents)
    }

    /// Serves `sock` until `until` holds, answering every request with its name.
    fn serve(sock: &mut ControlSocket, until: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !until() && Instant::now() < deadline {
            for inc in poll_once(sock) {
                let response = match inc.request {
                    Ok(cmd) => Response {
                        accepted: Some(Accepted { message: cmd.name().into(), target: 1, generation: 1 }),
                        ..Response::ok()
                    },
                    Err(e) => Response::error(e),
                };
                sock.answer(inc.id, &response);
            }
            sock.expire(Instant::now());
        }
    }

    #[test]
    fn answers_requests_and_refuses_nonsense() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let mut sock = ControlSocket::open(&path, false).unwrap();
        let mode = std::fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");

        let p = path.clone();
        let asker = std::thread::spawn(move || client::call(&p, Command::AddWorker, Duration::from_secs(5)));
        serve(&mut sock, || asker.is_finished());
        let r = asker.join().unwrap().unwrap();
        assert!(r.ok && r.accepted.as_ref().is_some_and(|a| a.message == "add-worker"), "answered: {r:?}");

        // A raw client sending garbage gets an error line, not silence.
        let p = path.clone();
        let raw = std::thread::spawn(move || {
            let mut s = UnixStream::connect(&p).unwrap();
            s.write_all(b"{\"v\":9,\"command\":\"status\"}\n").unwrap();
            let mut line = String::new();
            std::io::BufReader::new(s).read_line(&mut line).unwrap();
            line
        });
        serve(&mut sock, || raw.is_finished());
        let line = raw.join().unwrap();
        assert!(line.contains("protocol version 9 is not supported"), "{line}");

        // An endless request is cut off at the limit.
        let p = path.clone();
        let long = std::thread::spawn(move || {
            let mut s = UnixStream::connect(&p).unwrap();
            let _ = s.write_all(&vec![b'x'; MAX_REQUEST + 10]);
            let mut line = String::new();
            let _ = std::io::BufReader::new(s).read_line(&mut line);
            line
        });
        serve(&mut sock, || long.is_finished());
        assert!(long.join().unwrap().contains("longer than"));
        drop(sock);
        assert!(!path.exists(), "the socket file is removed on drop");
    }

    #[test]
    fn a_silent_client_is_dropped_at_its_deadline_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let mut sock = ControlSocket::open(&path, false).unwrap();
        let _silent = UnixStream::connect(&path).unwrap();
        while sock.clients.is_empty() {
            assert!(poll_once(&mut sock).is_empty());
        }
        assert!(poll_once(&mut sock).is_empty(), "nothing to read, and no wait for it");
        assert_eq!(sock.clients.len(), 1);
        assert!(sock.next_deadline().is_some());
        sock.expire(Instant::now() + CLIENT_DEADLINE + Duration::from_millis(1));
        assert!(sock.clients.is_empty());
    }

    #[test]
    fn refuses_to_replace_what_is_not_a_stale_socket_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        // A regular file, and a symlink to one: left alone.
        std::fs::write(dir.path().join("victim"), b"precious").unwrap();
        std::fs::write(&path, b"x").unwrap();
        assert!(ControlSocket::open(&path, false).is_err());
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("victim"), &path).unwrap();
        let err = ControlSocket::open(&path, true).err().unwrap();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(dir.path().join("victim")).unwrap(), b"precious");
        std::fs::remove_file(&path).unwrap();

        // A live one: another instance; refused unless taking over.
        let live = ControlSocket::open(&path, false).unwrap();
        let err = ControlSocket::open(&path, false).err().unwrap();
        assert!(err.to_string().contains("already running"), "{err}");
        let taken = ControlSocket::open(&path, true).unwrap();
        drop(live);
        assert!(path.exists(), "the old owner leaves the new owner's file alone");
        drop(taken);
        assert!(!path.exists());

        // A stale one (its listener gone, the file left): replaced.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let fresh = ControlSocket::open(&path, false).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temp file left");
        drop(fresh);
    }
}
