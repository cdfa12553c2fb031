//! The optional pidfile: written atomically, refused when another live process owns it.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// A pidfile this process wrote; removed when dropped.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
}

impl Pidfile {
    /// Writes our pid to `path`, unless a live process's pid is already there.
    pub fn create(path: &Path) -> io::Result<Pidfile> {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                if pid > 0 && pid != std::process::id() as i32 && kill(Pid::from_raw(pid), None).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("pidfile {} names running process {pid}", path.display()),
                    ));
                }
            }
        }
        // Write beside it and rename, so a reader never sees a half-written pid. The temp name
        // is random and created exclusively (O_EXCL, so never through a planted symlink).
        let tmp = write_temp(path, format!("{}\n", std::process::id()).as_bytes())?;
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Pidfile { path: path.to_path_buf() })
    }

    /// Where the pidfile is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the pidfile to `to` (an upgrade keeps the old pid at `<pidfile>.oldbin`, and
    /// moves it back if the new binary fails); dropping it then removes `to`.
    pub fn rename(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.path = to.to_path_buf();
        Ok(())
    }
}

/// Writes `bytes` to a new file with an unpredictable name beside `path`, mode `0644` (a pid is
/// no secret, and monitors read it); returns its path.
fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let name = path.file_name().map_or_else(|| "pid".into(), |n| n.to_string_lossy().into_owned());
    for _ in 0..16 {
        let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp);
        let mut file = match file {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("pidfile {}: {e}", tmp.display()))),
        };
        // Exact whatever the umask.
        let written =
            file.set_permissions(std::fs::Permissions::from_mode(0o644)).and_then(|()| file.write_all(bytes));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        return Ok(tmp);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("pidfile {}: no free temp name", path.display()),
    ))
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_our_pid_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pid");
        let pf = Pidfile::create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        drop(pf);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_live_owner_but_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pid");
        std::fs::write(&path, "1\n").unwrap(); // init is always alive
        assert!(Pidfile::create(&path).is_err());
        std::fs::write(&path, "999999999\n").unwrap();
        assert!(Pidfile::create(&path).is_ok());
    }

    #[test]
    fn the_temp_file_is_not_at_a_predictable_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pid");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // Whoever can write the directory plants a link where the temp file used to be written.
        std::os::unix::fs::symlink(&victim, path.with_extension("pid.tmp")).unwrap();
        let pf = Pidfile::create(&path).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "the planted link was followed");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        let mode = std::fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{mode:o}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "a temp file was left behind: {names:?}");
        drop(pf);
    }
}
