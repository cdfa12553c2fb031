//! The checks `doctor` makes on this host alone: can the listeners be bound, is `state_dir`
//! private, can the audit log be appended to, does the marker key load. Each uses the same
//! rules the service applies at start (`worker::host::state_file`, `marker_key`) and creates
//! nothing.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::unistd::{access, AccessFlags};
use socket2::{Domain, SockAddr, Socket, Type};
use supervisor::BindAddr;
use worker::host::{marker_key, state_file};
use worker::settings::MarkerKeySource;

use super::Check;
use crate::config::Config;

/// One line per `bind` address.
pub fn listeners(config: &Config) -> Vec<Check> {
    config
        .bind_addrs()
        .iter()
        .map(|addr| {
            let name = format!("listen {addr}");
            match addr {
                BindAddr::Tcp(sa) => tcp(name, sa, config.reuse_port),
                BindAddr::Unix(path) => unix(name, path),
            }
        })
        .collect()
}

/// Binds as `serve` would (reuse options included) but never listens, so no connection meant
/// for a running instance can land here.
fn tcp(name: String, sa: &SocketAddr, reuse_port: bool) -> Check {
    if sa.port() == 0 {
        return Check::ok(name, "port 0: the kernel picks a free port at start");
    }
    let bound = Socket::new(Domain::for_address(*sa), Type::STREAM, None).and_then(|s| {
        s.set_reuse_address(true)?;
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        if sa.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&SockAddr::from(*sa))
    });
    let Err(e) = bound else { return Check::ok(name, "can be bound") };
    match e.raw_os_error() {
        Some(nix::libc::EADDRINUSE) => in_use(name, sa.port()),
        Some(nix::libc::EACCES) => Check::fail(
            name,
            format!("port {} is privileged and this user may not bind it", sa.port()),
            "use a port of 1024 or more behind nginx, or let systemd bind it (awswhitelist.socket)",
        ),
        Some(nix::libc::EADDRNOTAVAIL) => Check::fail(
            name,
            format!("{} is not an address of this host", sa.ip()),
            "bind an address this host has (ip addr), or 0.0.0.0 / [::]",
        ),
        _ => Check::fail(name, format!("cannot bind: {e}"), "see the error"),
    }
}

/// The port is taken: by whom decides between warn (systemd or this service) and fail.
fn in_use(name: String, port: u16) -> Check {
    match holder(port) {
        Some((pid, comm)) if pid == 1 || comm == "systemd" => Check::warn(
            name,
            format!("held by systemd (pid {pid}): socket activation"),
            "nothing, if awswhitelist.socket is enabled: serve adopts the socket systemd passes",
        ),
        Some((pid, comm)) if comm.starts_with("awswhitelist") => Check::warn(
            name,
            format!("already served by {comm} (pid {pid}), a running instance of this service"),
            "stop it first, or hand over with USR2 (an upgrade); set reuse_port = true to bind beside it",
        ),
        Some((pid, comm)) => {
            Check::fail(name, format!("in use by {comm} (pid {pid})"), "stop that program, or change `bind`")
        }
        None => Check::warn(
            name,
            "in use by a process this user cannot see",
            "fine if it is systemd's socket (awswhitelist.socket) or this service; otherwise serve will \
             fail to bind: find it with `ss -ltnp` as root, or change `bind`",
        ),
    }
}

/// The pid and name of the process listening on TCP `port`, when this user may see it:
/// the socket's inode from /proc/net/tcp{,6}, then the process holding that inode.
fn holder(port: u16) -> Option<(u32, String)> {
    let hex = format!(":{port:04X}");
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode.
            (f.len() > 9 && f[1].ends_with(&hex) && f[3] == "0A").then(|| f[9].to_string())
        })
    })?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()))
        {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some((pid, comm.trim().to_string()));
        }
    }
    None
}

fn unix(name: String, path: &Path) -> Check {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => Check::warn(
                name,
                "a running server answers on this socket",
                "stop it first, or hand over with USR2 (an upgrade)",
            ),
            Err(_) => Check::ok(name, "a stale socket file, which serve replaces"),
        },
        Ok(_) => Check::fail(name, "exists and is not a socket", "remove it, or change `bind`"),
        Err(_) => match path.parent().filter(|d| d.is_dir()) {
            Some(dir) if access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok() => {
                Check::ok(name, "can be created")
            }
            Some(dir) => Check::fail(
                name,
                format!("{} is not writable by this user", dir.display()),
                "bind in a directory of the service's own (under systemd: /run/awswhitelist)",
            ),
            None => Check::fail(name, "its directory does not exist", "create it, or change `bind`"),
        },
    }
}

/// `state_dir`: the service's own and not writable by anyone else (as the service requires at
/// start). An absent one is fine when it can be created.
pub fn state_dir(dir: &Path) -> Check {
    const NAME: &str = "state_dir";
    let shown = dir.display();
    match std::fs::symlink_metadata(dir) {
        Err(_) => match dir.ancestors().skip(1).find(|a| a.exists()) {
            Some(up) if access(up, AccessFlags::W_OK | AccessFlags::X_OK).is_ok() => {
                Check::ok(NAME, format!("{shown} does not exist yet; serve creates it (mode 0700)"))
            }
            _ => Check::fail(
                NAME,
                format!("{shown} does not exist and this user cannot create it"),
                "create it owned by the service's user with mode 0700 (under systemd: StateDirectory=)",
            ),
        },
        Ok(meta) => {
            let link = meta.file_type().is_symlink();
            match state_file::check_dir(dir) {
                Ok(()) => {
                    let mode = std::fs::metadata(dir).map(|m| m.mode() & 0o7777).unwrap_or(0);
                    let via = if link { " (through a symbolic link, its target judged)" } else { "" };
                    Check::ok(NAME, format!("{shown}{via}: owned by this user, mode {mode:04o}"))
                }
                Err(e) => {
                    let text = e.to_string();
                    // The service's message ends with its fix in backquotes: split it off.
                    match text.split_once("; `") {
                        Some((found, fix)) => Check::fail(NAME, found, format!("`{fix}")),
                        None => Check::fail(NAME, text, "give the service a directory of its own"),
                    }
                }
            }
        }
    }
}

/// The audit log opens for appending (without writing a line); absent, its directory takes it.
pub fn audit_log(path: &Path, state_dir: &Path) -> Check {
    const NAME: &str = "audit_log";
    let shown = path.display();
    match state_file::check_append(path) {
        Ok(Some(len)) => Check::ok(NAME, format!("{shown} is writable ({len} bytes)")),
        Ok(None) => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            if dir == state_dir && !dir.exists() {
                Check::ok(NAME, format!("{shown} is created, in state_dir, by the first change"))
            } else if dir.is_dir() && access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok() {
                Check::ok(
                    NAME,
                    format!("{shown} does not exist yet; the first change creates it (mode 0640)"),
                )
            } else {
                Check::fail(
                    NAME,
                    format!("{shown} cannot be created: {} is missing or not writable", dir.display()),
                    "point whitelist.audit_log into a directory the service's user may write",
                )
            }
        }
        Err(e) => Check::fail(
            NAME,
            e.to_string(),
            "the service's user must own the log, a regular file (not a link); or change whitelist.audit_log",
        ),
    }
}

/// The marker key loads from where the configuration says (the generated one may not exist yet).
pub fn marker_key(source: &MarkerKeySource, state_dir: &Path) -> Check {
    const NAME: &str = "marker_key";
    let from = match source {
        MarkerKeySource::StateDir => format!("{}", state_dir.join(marker_key::FILE).display()),
        MarkerKeySource::File(path) => format!("marker_key_file {}", path.display()),
        MarkerKeySource::Env(name) => format!("environment variable {name}"),
    };
    match marker_key::load_existing(source, state_dir) {
        Ok(Some(_)) => Check::ok(NAME, format!("loads from {from}")),
        Ok(None) => Check::ok(
            NAME,
            format!("none yet: serve generates {from} on first start (hosts that manage the same groups must share one: marker_key_file)"),
        ),
        Err(e) => Check::fail(
            NAME,
            e.to_string(),
            "give a readable secret of at least 32 bytes (marker_key_file or marker_key_env), or remove the broken file so a new key is generated (rules signed with the old key then count as unmanaged)",
        ),
    }
}
