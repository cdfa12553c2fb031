//! History: the audit log read back as answers to "who opened this, when, why" — entries
//! filtered by group, address, user, caller, time range and outcome, newest first, a page at
//! a time. Only entries of groups the caller may touch (policy and credential) are shown.
//!
//! What is read is the recent tail of this host's audit log (the part the reconciler reads,
//! `Recorder::recent`); older entries live in the rotated files.

use std::time::SystemTime;

use ipnet::IpNet;
use serde::Serialize;

use super::super::{check_caller_group, check_group_id, invalid, Caller, Error, Whitelist};
use super::find::words;
use crate::whitelist::audit::{blocking, LoggedEntry};
use crate::whitelist::target::{host_net, parse_cidr};

/// Entries per page when the call names no `limit`.
const DEFAULT_LIMIT: usize = 50;
/// Most entries per page.
const MAX_LIMIT: usize = 500;

/// The filters of a history call; each absent one matches everything.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// One group.
    pub group: Option<String>,
    /// An address or network: entries whose rule overlaps it (`current`: the caller's address).
    pub ip_address: Option<String>,
    /// A user: named in the rule's description, or the identity that made the change.
    pub user: Option<String>,
    /// The identity that made the change, exactly.
    pub caller: Option<String>,
    /// From this time on (RFC 3339).
    pub since: Option<String>,
    /// Up to this time (RFC 3339).
    pub until: Option<String>,
    /// The entry's result: `added`, `renewed`, `removed`, `expired`, `failed`, `would_change`, …
    pub outcome: Option<String>,
    /// Entries per page (1–500, default 50).
    pub limit: Option<usize>,
    /// Where the previous page stopped (its `next_cursor`).
    pub cursor: Option<String>,
}

/// One page of history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// The entries.
    pub entries: Vec<LoggedEntry>,
    /// Give it back as `cursor` for the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

impl Whitelist {
    /// The audit entries `q` asks for that the caller may see, newest first, one page.
    pub async fn history(&self, q: &HistoryQuery, who: &Caller) -> Result<History, Error> {
        if let Some(g) = &q.group {
            let g = check_group_id(g)?;
            self.policy.check_group(&g)?;
            check_caller_group(who, &g)?;
        }
        let net = match q.ip_address.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
            None => None,
            Some(a) if a.eq_ignore_ascii_case("current") => {
                Some(host_net(who.addr.ok_or_else(|| Error::Invalid {
                    field: "ip_address",
                    message: "\"current\" needs a transport that has your address; give an address".into(),
                })?))
            }
            Some(a) => Some(parse_cidr(a).map_err(invalid("ip_address"))?),
        };
        let since = time(q.since.as_deref(), "since")?;
        let until = time(q.until.as_deref(), "until")?;
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::Invalid {
                field: "limit",
                message: format!("limit {limit} is not between 1 and {MAX_LIMIT}"),
            });
        }
        let user = q.user.as_deref().map(str::to_ascii_lowercase);
        let entries = blocking(&self.recorder, |r| r.recent())
            .await
            .map_err(|e| Error::Audit(format!("the audit log cannot be read: {e}")))?;
        let wanted = |e: &LoggedEntry| {
            let written = e.written();
            self.may_touch(who, &e.group_id)
                && q.group.as_deref().is_none_or(|g| g.trim() == e.group_id)
                && q.caller.as_deref().is_none_or(|c| c == e.identity)
                && q.outcome.as_deref().is_none_or(|o| o == e.result)
                && since.is_none_or(|s| written.is_some_and(|w| w >= s))
                && until.is_none_or(|u| written.is_some_and(|w| w <= u))
                && net.is_none_or(|n| overlaps(e, n))
                && user.as_deref().is_none_or(|u| {
                    e.identity.eq_ignore_ascii_case(u)
                        || e.rule
                            .get("description")
                            .and_then(|d| d.as_str())
                            .is_some_and(|d| words(d).any(|w| w == u))
                })
        };
        let mut newest_first = entries.iter().rev().filter(|e| wanted(e));
        if let Some(cursor) = q.cursor.as_deref() {
            if !newest_first.any(|e| cursor_of(e) == cursor) {
                return Err(Error::Invalid {
                    field: "cursor",
                    message: "this cursor names no entry of the recent audit log (it came from another query, or the log was rotated); start again without cursor".into(),
                });
            }
        }
        let page: Vec<LoggedEntry> = newest_first.by_ref().take(limit).cloned().collect();
        let next_cursor = match newest_first.next() {
            Some(_) => page.last().map(cursor_of),
            None => None,
        };
        Ok(History { entries: page, next_cursor })
    }
}

/// Names an entry for the next page: its time, change id and phase.
fn cursor_of(e: &LoggedEntry) -> String {
    format!("{}~{}~{}", e.time, e.id.as_deref().unwrap_or("-"), e.phase.as_deref().unwrap_or("-"))
}

fn time(value: Option<&str>, field: &'static str) -> Result<Option<SystemTime>, Error> {
    value
        .map(|v| {
            humantime::parse_rfc3339_weak(v.trim()).map_err(|e| Error::Invalid {
                field,
                message: format!("{v:?} is not an RFC 3339 time like 2026-11-24T10:00:00Z ({e})"),
            })
        })
        .transpose()
}

/// The entry's rule network and `n` overlap.
fn overlaps(e: &LoggedEntry, n: IpNet) -> bool {
    let cidr = e.rule.get("cidr_ip").and_then(|c| c.as_str()).and_then(|c| c.parse::<IpNet>().ok());
    cidr.is_some_and(|c| c.contains(&n) || n.contains(&c))
}
