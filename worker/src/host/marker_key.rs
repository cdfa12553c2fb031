//! The key that signs rule markers ([`crate::whitelist::marker`]): from a secret file or an
//! environment variable named in the config (shared by every host that manages the same
//! groups), else `<state_dir>/marker.key`, generated on first start and shared by the host's
//! workers.
//!
//! Generation is race-free: each worker writes a complete key to a private temporary file
//! (created `0600`, `O_EXCL | O_NOFOLLOW`) and hard-links it into place, which fails when the
//! name exists; the losers read the winner's key. Nobody ever reads half a key. Errors name the
//! file or the variable, never the key.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::settings::MarkerKeySource;
use crate::whitelist::marker::MarkerKey;

/// The generated key's file name in `state_dir`.
pub const FILE: &str = "marker.key";

/// Loads (or, for [`MarkerKeySource::StateDir`], creates) the marker key.
pub fn load(source: &MarkerKeySource, state_dir: &Path) -> io::Result<MarkerKey> {
    match source {
        MarkerKeySource::File(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot read marker_key_file {}: {e}", path.display()))
            })?;
            key_of(&bytes, &format!("marker_key_file {}", path.display()))
        }
        MarkerKeySource::Env(name) => match std::env::var_os(name) {
            Some(value) => key_of(value.as_bytes(), &format!("environment variable {name} (marker_key_env)")),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("marker_key_env names the environment variable {name}, which is not set"),
            )),
        },
        MarkerKeySource::StateDir => generated(&state_dir.join(FILE)),
    }
}

/// Loads the marker key without generating one: `None` when the state dir has none yet (the
/// service makes it on first start). For `doctor`, which must leave the host as it found it.
pub fn load_existing(source: &MarkerKeySource, state_dir: &Path) -> io::Result<Option<MarkerKey>> {
    if let MarkerKeySource::StateDir = source {
        let path = state_dir.join(FILE);
        return match read_own(&path) {
            Ok(bytes) => key_of(&bytes, &format!("marker key {}", path.display())).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(e.kind(), format!("marker key {}: {e}", path.display()))),
        };
    }
    load(source, state_dir).map(Some)
}

/// The key in `bytes`, trailing whitespace (a final newline) left out.
fn key_of(bytes: &[u8], origin: &str) -> io::Result<MarkerKey> {
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    MarkerKey::new(&bytes[..end])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{origin}: {e}")))
}

fn generated(path: &Path) -> io::Result<MarkerKey> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("marker key {}: {e}", path.display()));
    match read_own(path) {
        Ok(bytes) => return key_of(&bytes, &format!("marker key {}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(e)),
    }
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| io::Error::other("the system random generator failed"))?;
    let mut text: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    text.push('\n');
    let mut tag = [0u8; 8];
    aws_lc_rs::rand::fill(&mut tag).map_err(|_| io::Error::other("the system random generator failed"))?;
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{FILE}.{}.{tag}", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            File::open(dir).and_then(|d| d.sync_all()).map_err(named)?;
            key_of(text.as_bytes(), "generated marker key")
        }
        // Another worker linked its key first: use that one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let bytes = read_own(path).map_err(named)?;
            key_of(&bytes, &format!("marker key {}", path.display()))
        }
        Err(e) => Err(named(e)),
    }
}

/// Reads a file of the state dir, refusing a symlink in its place.
fn read_own(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::whitelist::{Ports, Protocol, RuleSpec};

    /// A marker made with `key`: equal markers mean equal keys.
    fn sample(key: &MarkerKey) -> String {
        let spec = RuleSpec {
            group_id: "sg-11111111".into(),
            cidr: "203.0.113.7/32".parse().unwrap(),
            protocol: Protocol::Tcp,
            ports: Ports::single(22),
        };
        key.marker(&spec, None)
    }

    #[test]
    fn racing_workers_agree_on_one_generated_key() {
        let dir = tempfile::tempdir().unwrap();
        let state: PathBuf = dir.path().into();
        let start = Arc::new(Barrier::new(8));
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (state, start) = (state.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    sample(&load(&MarkerKeySource::StateDir, &state).unwrap())
                })
            })
            .collect();
        let markers: Vec<String> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(markers.iter().all(|m| *m == markers[0]), "{markers:?}");
        let meta = std::fs::metadata(state.join(FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [FILE], "no temporary file is left behind");
        let again = load(&MarkerKeySource::StateDir, &state).unwrap();
        assert_eq!(sample(&again), markers[0], "a restart keeps the key");
    }

    #[test]
    fn a_symlink_in_place_of_the_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "k".repeat(64)).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(FILE)).unwrap();
        let e = load(&MarkerKeySource::StateDir, dir.path()).unwrap_err();
        assert!(e.to_string().contains(FILE), "{e}");
    }

    #[test]
    fn file_and_env_sources_name_themselves_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, format!("{}\n", "a".repeat(64))).unwrap();
        let from_file = load(&MarkerKeySource::File(file.clone()), dir.path()).unwrap();
        std::env::set_var("AWSWL_TEST_MARKER_KEY", "a".repeat(64));
        let from_env = load(&MarkerKeySource::Env("AWSWL_TEST_MARKER_KEY".into()), dir.path()).unwrap();
        assert_eq!(sample(&from_file), sample(&from_env), "a final newline is not part of the key");
        std::fs::write(&file, "short-secret-value").unwrap();
        let e = load(&MarkerKeySource::File(file.clone()), dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("marker_key_file") && e.contains("32") && !e.contains("short-secret-value"),
            "{e}"
        );
        std::env::set_var("AWSWL_TEST_MARKER_KEY", "short-secret-value");
        let e = load(&MarkerKeySource::Env("AWSWL_TEST_MARKER_KEY".into()), dir.path()).unwrap_err();
        assert!(!e.to_string().contains("short-secret-value"), "{e}");
        let e = load(&MarkerKeySource::Env("AWSWL_TEST_UNSET_KEY".into()), dir.path()).unwrap_err();
        assert!(e.to_string().contains("AWSWL_TEST_UNSET_KEY"), "{e}");
        assert!(!dir.path().join(FILE).exists(), "a configured source never generates a key");
    }
}
