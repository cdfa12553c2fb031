//! The one way a file in `state_dir` is opened for sharing between the host's workers (cache
//! counters, rate-limit tables): read-write, created when absent, never truncated (another
//! worker may be using it), grown but never shrunk.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Opens (creating) a shared state file; errors name the file.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))
}

/// Makes the file at least `bytes` long (zeroes), never shorter: others may have mapped more.
pub fn grow(file: &File, bytes: u64) -> io::Result<()> {
    if file.metadata()?.len() < bytes {
        file.set_len(bytes)?;
    }
    Ok(())
}
