//! Change counters shared by every worker of the host through a memory-mapped file, so a read
//! cache in one worker notices a change made by another before it serves a stale answer.
//!
//! The table is fixed-size; a group maps to a slot by hash. Two groups sharing a slot only
//! cost an extra AWS read, never a stale one, since counters only grow.

use std::hash::{Hash, Hasher};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use crate::whitelist::cache::Versions;

const SLOTS: usize = 4096;

/// Counters in a shared file.
pub struct ChangeCounters {
    map: MmapMut,
}

impl ChangeCounters {
    /// Opens (creating and sizing) the counter file.
    pub fn open(path: &Path) -> io::Result<ChangeCounters> {
        let file = super::state_file::open(path)?;
        super::state_file::grow(&file, (SLOTS * 8) as u64)?;
        // SAFETY: the file is only ever accessed through this mapping as aligned AtomicU64s,
        // by processes of this program; a truncation by someone else would be a bug outside it.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(ChangeCounters { map })
    }

    fn slot(&self, key: &str) -> &AtomicU64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let i = (h.finish() as usize) % SLOTS;
        let base = self.map.as_ptr() as *const AtomicU64;
        // SAFETY: the mapping is SLOTS * 8 bytes, page-aligned, and i < SLOTS.
        unsafe { &*base.add(i) }
    }
}

impl Versions for ChangeCounters {
    fn get(&self, key: &str) -> u64 {
        self.slot(key).load(Ordering::Acquire)
    }

    fn bump(&self, key: &str) {
        self.slot(key).fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_of_one_file_see_each_others_bumps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("versions");
        let a = ChangeCounters::open(&path).unwrap();
        let b = ChangeCounters::open(&path).unwrap();
        assert_eq!(b.get("sg-1"), 0);
        a.bump("sg-1");
        assert_eq!(b.get("sg-1"), 1);
        assert_eq!(b.get("sg-2"), a.get("sg-2"));
    }
}
