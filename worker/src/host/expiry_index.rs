//! The index of groups that were given expiring rules: the sweeper reads it, so a group matched
//! only by a pattern in the policy is still swept. One JSON line per (group, region, profile),
//! appended by the worker that added the rule, read by whichever worker sweeps.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::state_file::append_line;
use crate::whitelist::Scope;

const INDEX: &str = "expiring-groups.jsonl";

/// One group to sweep, and the account scope to sweep it with (never per-call keys).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    /// The group.
    pub group: String,
    /// Region it lives in, if not the default.
    pub region: Option<String>,
    /// Credential profile, if not the default chain.
    pub profile: Option<String>,
}

/// Records durably that `group` holds an expiring rule, so the sweeper will look at it (a
/// whole line or nothing, like the audit log).
pub fn note_expiring(state_dir: &Path, scope: &Scope, group: &str) -> io::Result<()> {
    let target =
        Target { group: group.to_string(), region: scope.region.clone(), profile: scope.profile.clone() };
    if read_index(state_dir).contains(&target) {
        return Ok(());
    }
    let mut line = serde_json::to_vec(&target).map_err(io::Error::other)?;
    line.push(b'\n');
    let f = super::state_file::open_append(&state_dir.join(INDEX), super::state_file::PRIVATE)?;
    append_line(&f, &line)
}

/// Every group the sweeper will look at besides `sweep_groups` (an unreadable line is skipped).
pub fn read_index(state_dir: &Path) -> BTreeSet<Target> {
    let Ok(Some(f)) = super::state_file::open_read(&state_dir.join(INDEX)) else { return BTreeSet::new() };
    BufReader::new(f).lines().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_keeps_each_target_once() {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope { profile: None, region: Some("eu-west-1".into()), keys: None };
        note_expiring(dir.path(), &scope, "sg-12345678").unwrap();
        note_expiring(dir.path(), &scope, "sg-12345678").unwrap();
        note_expiring(dir.path(), &Scope { region: None, ..scope }, "sg-12345678").unwrap();
        assert_eq!(read_index(dir.path()).len(), 2);
    }
}
