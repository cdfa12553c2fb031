//! EC2 managed prefix lists for [`Firewall`](crate::whitelist::Firewall): read with
//! DescribeManagedPrefixLists (version, MaxEntries, name) and GetManagedPrefixListEntries at
//! that version (paged), written with ModifyManagedPrefixList naming `CurrentVersion`, so EC2
//! refuses a write on a list that changed since it was read (the retry is the domain's, in
//! `whitelist::prefix_list`). moto 5.2 does not enforce `CurrentVersion` (it applies a stale
//! write to the old version's entries, silently dropping the other writer's) and ignores
//! `DryRun` on this call; both are noted where they matter.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{AddPrefixListEntry, RemovePrefixListEntry};

use super::ec2::Ec2Firewall;
use super::receipts;
use crate::metrics::aws_call;
use crate::whitelist::{FirewallError, PrefixListEdit, PrefixListEntry, PrefixListState, Scope};

const DESCRIBE: &str = "ec2:DescribeManagedPrefixLists";
const ENTRIES: &str = "ec2:GetManagedPrefixListEntries";
const MODIFY: &str = "ec2:ModifyManagedPrefixList";
/// Most pages of entries read for one list (a guard against an endpoint that never ends).
const MAX_PAGES: usize = 100;

/// EC2's codes for "the list is not at the version you named" (or is mid-change).
fn is_conflict(code: Option<&str>) -> bool {
    matches!(code, Some("PrefixListVersionMismatch" | "IncorrectState"))
        || code.is_some_and(|c| c.ends_with("VersionMismatch"))
}

impl Ec2Firewall {
    /// The list `id` now: version, limit, name and every entry at that version.
    pub(super) async fn read_prefix_list(
        &self,
        scope: &Scope,
        id: &str,
    ) -> Result<PrefixListState, FirewallError> {
        let s = self.clients().session(scope, id).await?;
        let call = s.call(DESCRIBE, id);
        let sent = s.ec2.describe_managed_prefix_lists().prefix_list_ids(id).send().await;
        let out = aws_call(DESCRIBE, sent).map_err(|e| s.fail(&call, &e))?;
        let Some(list) = out.prefix_lists().iter().find(|l| l.prefix_list_id() == Some(id)) else {
            return Err(FirewallError::GroupNotFound { group: id.to_string(), region: s.region.clone() });
        };
        let Some(version) = list.version() else {
            return Err(FirewallError::Refused {
                code: "PrefixListNotModifiable".into(),
                message: format!(
                    "{id} has no version: it is an AWS-managed prefix list, which no account may change"
                ),
            });
        };
        let call = s.call(ENTRIES, id);
        let mut entries = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let sent = s
                .ec2
                .get_managed_prefix_list_entries()
                .prefix_list_id(id)
                .target_version(version)
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await;
            let out = aws_call(ENTRIES, sent).map_err(|e| s.fail(&call, &e))?;
            entries.extend(out.entries().iter().filter_map(|e| {
                Some(PrefixListEntry {
                    cidr: e.cidr()?.parse().ok()?,
                    description: e.description().unwrap_or_default().to_string(),
                })
            }));
            match out.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => {
                    return Ok(PrefixListState {
                        id: id.to_string(),
                        name: list.prefix_list_name().map(str::to_string),
                        version,
                        max_entries: list.max_entries(),
                        entries,
                    })
                }
            }
        }
        Err(FirewallError::Other {
            action: ENTRIES.into(),
            code: "TooManyPages".into(),
            message: format!("the entries of {id} did not end after {MAX_PAGES} pages"),
        })
    }

    /// Writes `edit` to `id` for `version`; a moved version is [`VERSION_CONFLICT`].
    ///
    /// [`VERSION_CONFLICT`]: crate::whitelist::firewall::VERSION_CONFLICT
    pub(super) async fn write_prefix_list(
        &self,
        scope: &Scope,
        id: &str,
        version: i64,
        edit: &PrefixListEdit,
    ) -> Result<(), FirewallError> {
        let s = self.clients().session(scope, id).await?;
        let call = s.call(MODIFY, id);
        let add = edit.add.iter().map(|e| {
            AddPrefixListEntry::builder().cidr(e.cidr.to_string()).description(&e.description).build()
        });
        let remove = edit.remove.iter().map(|c| RemovePrefixListEntry::builder().cidr(c.to_string()).build());
        let mut ask = s.ec2.modify_managed_prefix_list().prefix_list_id(id).current_version(version);
        if !edit.add.is_empty() {
            ask = ask.set_add_entries(Some(add.collect()));
        }
        if !edit.remove.is_empty() {
            ask = ask.set_remove_entries(Some(remove.collect()));
        }
        let sent = receipts::noted(&s, ask.send().await);
        let done = match sent {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(e.code()) => Err(FirewallError::Other {
                action: MODIFY.into(),
                code: crate::whitelist::firewall::VERSION_CONFLICT.into(),
                message: format!("{id} is no longer at version {version}"),
            }),
            Err(e) => Err(s.fail(&call, &e)),
        };
        aws_call(MODIFY, done)?;
        tracing::debug!(
            list = id,
            version,
            added = edit.add.len(),
            removed = edit.remove.len(),
            "prefix list modified"
        );
        Ok(())
    }

    /// Asks EC2 with `DryRun` whether `scope` may modify `list`. The probe only writes the list's
    /// own name back (no entries, no version): an endpoint that ignores `DryRun`, as moto does,
    /// changes nothing and answers success, which counts as allowed (as a revoke's probe does).
    pub(super) async fn probe_prefix_list(
        &self,
        scope: &Scope,
        list: &PrefixListState,
    ) -> Result<(), FirewallError> {
        let id = list.id.as_str();
        let s = self.clients().session(scope, id).await?;
        let call = s.call(MODIFY, id);
        let mut ask = s.ec2.modify_managed_prefix_list().prefix_list_id(id).dry_run(true);
        if let Some(name) = &list.name {
            ask = ask.prefix_list_name(name);
        }
        let allowed = match receipts::noted(&s, ask.send().await) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("DryRunOperation") => Ok(()),
            Err(e) => Err(s.fail(&call, &e)),
        };
        aws_call(MODIFY, allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_told_by_code() {
        assert!(is_conflict(Some("PrefixListVersionMismatch")));
        assert!(is_conflict(Some("IncorrectState")));
        assert!(!is_conflict(Some("UnauthorizedOperation")));
        assert!(!is_conflict(None));
    }
}
