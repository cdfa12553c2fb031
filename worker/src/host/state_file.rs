//! The one way a file in `state_dir` — and the audit log — is opened: cache counters,
//! rate-limit tables, the expiry index, the sweeper and group locks, the audit log.
//!
//! - Created private: `0600` (`0640` for the audit log, so a log reader's group may read it),
//!   whatever the umask; an existing file with wider permissions is narrowed when it is ours.
//! - Never through a symbolic link (`O_NOFOLLOW`): whoever could plant a link where a state
//!   file will be would have the service write (or grow, or truncate) any file it can write.
//!   A FIFO or device is refused too (`O_NONBLOCK` keeps the open from hanging on a FIFO).
//! - Shared files are read-write, created when absent, never truncated (another worker may be
//!   using them), grown but never shrunk.
//!
//! [`prepare_dir`] makes `state_dir` (mode `0700`) and refuses one that anyone but the
//! service's user could write: links and files planted there would be trusted.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of a state file: the service's user only.
pub const PRIVATE: u32 = 0o600;
/// Mode of a log: the service's user, read by its group.
pub const LOG: u32 = 0o640;

/// Opens (creating, mode `0600`) a shared state file for reading and writing; errors name it.
pub fn open(path: &Path) -> io::Result<File> {
    secure(path, OpenOptions::new().read(true).write(true).create(true).truncate(false), PRIVATE)
}

/// Opens (creating with `mode`) a file for appending whole lines.
pub fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    // Readable too: an append first looks at the file's last byte (a line left torn by a crash).
    secure(path, OpenOptions::new().read(true).append(true).create(true), mode)
}

/// Opens an existing state file for reading; `None` when there is none.
pub fn open_read(path: &Path) -> io::Result<Option<File>> {
    match secure(path, OpenOptions::new().read(true), PRIVATE) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates a new private file (`0600`), failing with `AlreadyExists` when the name is taken
/// (by a file or a link: `O_EXCL` never follows one). Used where creating the name is the fact
/// recorded (a consumed consent state).
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// Creates the private sub-directory `dir` (`0700`) of the prepared state dir, refusing a
/// symbolic link or anything else in its place.
pub fn private_subdir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} must be a directory of the service's user with mode 0700", dir.display()),
        ));
    }
    Ok(())
}

/// Whether the existing file at `path` opens for appending the way the service opens it (never
/// through a link, only a regular file): its length, or `None` when there is no file yet.
/// Creates and changes nothing (`doctor`).
pub fn check_append(path: &Path) -> io::Result<Option<u64>> {
    match opened(path, OpenOptions::new().append(true)) {
        Ok(file) => Ok(Some(file.metadata().map_err(|e| named(path, e))?.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The error `e` about `path`, saying so when a symbolic link was refused.
fn named(path: &Path, e: io::Error) -> io::Error {
    let why = if e.raw_os_error() == Some(nix::libc::ELOOP) {
        "it is a symbolic link, and state files are never opened through one".to_string()
    } else {
        e.to_string()
    };
    io::Error::new(e.kind(), format!("cannot open {}: {why}", path.display()))
}

/// Opens without following a link or blocking on a FIFO; only a regular file is accepted.
fn opened(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let fail = |e: io::Error| named(path, e);
    let file = options
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(fail(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
    }
    Ok(file)
}

fn secure(path: &Path, options: &mut OpenOptions, mode: u32) -> io::Result<File> {
    let fail = |e: io::Error| named(path, e);
    let file = opened(path, options.mode(mode))?;
    let meta = file.metadata().map_err(fail)?;
    // The umask may have narrowed the mode (fine, but made exact), an older version may have
    // left it wider (narrowed): only for our own files, someone else's stay as they are.
    if meta.mode() & 0o7777 != mode && meta.uid() == nix::unistd::geteuid().as_raw() {
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    }
    Ok(file)
}

/// Makes the file at least `bytes` long (zeroes), never shorter: others may have mapped more.
pub fn grow(file: &File, bytes: u64) -> io::Result<()> {
    if file.metadata()?.len() < bytes {
        file.set_len(bytes)?;
    }
    Ok(())
}

/// Creates `state_dir` (mode `0700`) if absent, and refuses it unless only the service's user
/// can write it: it must be owned by the effective user and not writable by group or others.
/// Errors name `whitelist.state_dir` and the fix.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    let shown = dir.display();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create whitelist.state_dir {shown}: {e}")))?;
    check_dir(dir)
}

/// The checks of [`prepare_dir`] on an existing `state_dir`, creating nothing (`doctor`).
pub fn check_dir(dir: &Path) -> io::Result<()> {
    let shown = dir.display();
    // A symlinked state_dir is fine (systemd's DynamicUser makes one): its target is judged.
    let meta = std::fs::metadata(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("whitelist.state_dir {shown}: {e}")))?;
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if !meta.is_dir() {
        return refuse(format!("whitelist.state_dir {shown} is not a directory"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return refuse(format!(
            "whitelist.state_dir {shown} is owned by uid {}, not by the service's user (uid {me}): its \
             owner could plant files and links the service trusts; `chown {me} {shown}`, or point \
             whitelist.state_dir at a directory of the service's own",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return refuse(format!(
            "whitelist.state_dir {shown} is writable by {} (mode {mode:04o}): they could plant files \
             and links the service trusts; `chmod 700 {shown}`, or point whitelist.state_dir at a \
             directory only the service's user can write",
            if mode & 0o002 != 0 { "every user" } else { "its group" }
        ));
    }
    Ok(())
}

/// Appends `line` (ending in `'\n'`) durably as a whole line, or leaves the file as it was.
/// `file` must be open for reading and appending.
pub fn append_line(file: &File, line: &[u8]) -> io::Result<()> {
    file.lock()?;
    let result = append_locked(file, line);
    let _ = file.unlock();
    result
}

fn append_locked(mut file: &File, line: &[u8]) -> io::Result<()> {
    let start = file.metadata()?.len();
    let mut buf = Vec::with_capacity(line.len() + 1);
    if start > 0 && last_byte(file, start)? != b'\n' {
        buf.push(b'\n');
    }
    buf.extend_from_slice(line);
    let written = file.write_all(&buf).and_then(|()| file.sync_data());
    if written.is_err() {
        // Nobody else appends while we hold the lock: cut back to where we started.
        let _ = file.set_len(start).and_then(|()| file.sync_data());
    }
    written
}

fn last_byte(file: &File, len: u64) -> io::Result<u8> {
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, len - 1)?;
    Ok(byte[0])
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;

    use crate::host::expiry_index::note_expiring;
    use crate::host::{AuditLog, ChangeCounters};
    use crate::ratelimit::{Limits, RateLimiter};
    use crate::whitelist::Scope;

    const LIMITS: Limits = Limits { rate_per_minute: 60.0, burst: 3 };

    /// Every state file this module opens, by the name it gets in `state_dir`, with the mode it
    /// must be created with and a way to open it there.
    #[allow(clippy::type_complexity)]
    fn openers() -> Vec<(&'static str, u32, Box<dyn Fn(&Path) -> bool>)> {
        vec![
            (
                "cache-versions",
                0o600,
                Box::new(|d: &Path| ChangeCounters::open(&d.join("cache-versions")).is_ok()),
            ),
            ("ratelimit", 0o600, Box::new(|d: &Path| RateLimiter::open(d.join("ratelimit"), LIMITS).is_ok())),
            ("audit.log", 0o640, Box::new(|d: &Path| AuditLog::open(&d.join("audit.log")).is_ok())),
            (
                "expiring-groups.jsonl",
                0o600,
                Box::new(|d: &Path| {
                    note_expiring(d, &Scope { profile: None, region: None, keys: None }, "sg-12345678")
                        .is_ok()
                }),
            ),
        ]
    }

    #[test]
    fn state_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode, open) in openers() {
            assert!(open(dir.path()), "{name}");
            let meta = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                mode,
                "{name}: mode {:o}",
                meta.permissions().mode()
            );
        }
    }

    #[test]
    fn a_planted_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        for (name, _, open) in openers() {
            std::fs::write(&victim, b"precious").unwrap();
            std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
            let planted = dir.path().join(name);
            symlink(&victim, &planted).unwrap();
            assert!(!open(dir.path()), "{name}: a symlink was followed");
            assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{name}: the target changed");
            assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o644, "{name}");
            // A dangling link must not create its target either.
            std::fs::remove_file(&victim).unwrap();
            assert!(!open(dir.path()), "{name}: a dangling symlink was followed");
            assert!(!victim.exists(), "{name}: the dangling link's target was created");
            std::fs::remove_file(&planted).unwrap();
        }
    }
}
