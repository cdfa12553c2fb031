//! The optional pidfile: written atomically, refused when another live process owns it.

use std::io;
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
        // Write beside it and rename, so a reader never sees a half-written pid.
        let tmp = path.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
        std::fs::rename(&tmp, path)?;
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
}
