//! Each security group's audit history as an MCP resource, `awswhitelist://history/<sg-id>`:
//! `resources/list` names the groups the caller may touch (policy and credential, as
//! `whitelist_groups` finds them), a page at a time; `resources/read` answers the group's audit
//! entries newest first, one page, with the URI of the next page (`?cursor=…`, the cursor of
//! `whitelist_history`). Read-only, so read-only callers may use them; they need the read scope.
//! A group outside the policy or the credential is not listed, and reading it is refused.

use std::sync::Arc;

use serde_json::json;

use super::args::GROUP_HEADER;
use crate::auth::SCOPE_READ;
use crate::caller::Caller;
use crate::mcp::resource::{
    About, Resource, ResourceError, ResourceFuture, ResourcePage, ResourceTemplate, Resources, TextContents,
};
use crate::whitelist::{Error, HistoryQuery, Scope, Whitelist};

/// What every history URI starts with.
pub const HISTORY_PREFIX: &str = "awswhitelist://history/";
/// Content type of a read.
const MIME: &str = "application/json";

/// The audit history of each group the caller may touch.
pub struct HistoryResources {
    service: Arc<Whitelist>,
    page_size: usize,
}

impl HistoryResources {
    /// Lists `page_size` groups a page (at least one).
    pub fn new(service: Arc<Whitelist>, page_size: usize) -> HistoryResources {
        HistoryResources { service, page_size: page_size.max(1) }
    }
}

/// The default AWS identity and region: resources take no per-call credentials.
fn default_scope() -> Scope {
    Scope { profile: None, region: None, keys: None }
}

impl Resources for HistoryResources {
    fn scope(&self) -> Option<&'static str> {
        Some(SCOPE_READ)
    }

    fn list<'a>(&'a self, cursor: Option<&'a str>, caller: &'a Caller) -> ResourceFuture<'a, ResourcePage> {
        Box::pin(async move {
            let after = match cursor {
                None => None,
                Some(c) => Some(decode_list_cursor(c)?),
            };
            let mut groups = self.service.groups(&default_scope(), caller).await.map_err(failed)?;
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            groups.dedup_by(|a, b| a.group_id == b.group_id);
            let rest: Vec<_> = groups
                .into_iter()
                .filter(|g| after.as_deref().is_none_or(|a| g.group_id.as_str() > a))
                .collect();
            let more = rest.len() > self.page_size;
            let page: Vec<Resource> = rest
                .into_iter()
                .take(self.page_size)
                .map(|g| {
                    let vpc = g.vpc_id.as_deref().unwrap_or("no VPC");
                    Resource {
                        uri: format!("{HISTORY_PREFIX}{}", g.group_id),
                        about: About {
                            name: format!("history-{}", g.group_id),
                            title: Some(format!("Audit history of {} ({})", g.name, g.group_id)),
                            description: Some(format!(
                                "Changes to {} ({vpc}: {}), newest first; the group's id is also sent as Mcp-Param-{GROUP_HEADER} by its tools.",
                                g.group_id, g.description
                            )),
                            mime_type: Some(MIME.into()),
                        },
                    }
                })
                .collect();
            let next_cursor = match (more, page.last()) {
                (true, Some(last)) => Some(encode_list_cursor(&last.uri[HISTORY_PREFIX.len()..])),
                _ => None,
            };
            Ok(ResourcePage { resources: page, next_cursor })
        })
    }

    fn read<'a>(&'a self, uri: &'a str, caller: &'a Caller) -> ResourceFuture<'a, TextContents> {
        Box::pin(async move {
            let target = parse_uri(uri)?;
            let q = HistoryQuery {
                group: Some(target.group.clone()),
                cursor: target.cursor.clone(),
                ..HistoryQuery::default()
            };
            let h = self.service.history(&q, caller).await.map_err(|e| match e {
                Error::Policy(r) => {
                    ResourceError::NotFound(format!("no history resource {uri} for you: {r}"))
                }
                Error::Invalid { field: "cursor", message } => ResourceError::Invalid(message),
                Error::Invalid { message, .. } => {
                    ResourceError::NotFound(format!("no history resource {uri}: {message}"))
                }
                e => failed(e),
            })?;
            let next_uri = h.next_cursor.as_deref().map(|c| page_uri(&target.group, c));
            let text = json!({
                "security_group_id": target.group,
                "entries": h.entries,
                "count": h.entries.len(),
                "next_cursor": h.next_cursor,
                "next_uri": next_uri,
            })
            .to_string();
            Ok(TextContents { uri: uri.to_owned(), mime_type: MIME.into(), text })
        })
    }

    fn templates(&self) -> Vec<ResourceTemplate> {
        vec![ResourceTemplate {
            uri_template: format!("{HISTORY_PREFIX}{{security_group_id}}{{?cursor}}"),
            about: About {
                name: "history".into(),
                title: Some("Audit history of a security group".into()),
                description: Some(
                    "The audit entries of one security group you may touch, newest first; a page at \
                     a time, the next one at next_uri."
                        .into(),
                ),
                mime_type: Some(MIME.into()),
            },
        }]
    }
}

fn failed(e: Error) -> ResourceError {
    ResourceError::Failed(e.to_string())
}

/// A history URI taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HistoryUri {
    group: String,
    cursor: Option<String>,
}

/// `awswhitelist://history/<group>[?cursor=<percent-encoded>]`; anything else is not ours.
fn parse_uri(uri: &str) -> Result<HistoryUri, ResourceError> {
    let not_ours = || {
        ResourceError::NotFound(format!("no resource {uri}: history resources are {HISTORY_PREFIX}<sg-id>"))
    };
    let rest = uri.strip_prefix(HISTORY_PREFIX).ok_or_else(not_ours)?;
    let (group, query) = match rest.split_once('?') {
        Some((g, q)) => (g, Some(q)),
        None => (rest, None),
    };
    if group.is_empty() || !group.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(not_ours());
    }
    let cursor = match query {
        None => None,
        Some(q) => {
            let value = q.strip_prefix("cursor=").filter(|v| !v.contains('&')).ok_or_else(|| {
                ResourceError::Invalid(format!("{uri}: the only query a history URI takes is ?cursor=…"))
            })?;
            Some(
                percent_decode(value)
                    .ok_or_else(|| ResourceError::Invalid(format!("{uri}: malformed cursor")))?,
            )
        }
    };
    Ok(HistoryUri { group: group.to_owned(), cursor })
}

/// The URI of the page of `group`'s history that starts after `cursor`.
fn page_uri(group: &str, cursor: &str) -> String {
    format!("{HISTORY_PREFIX}{group}?cursor={}", percent_encode(cursor))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

/// A `resources/list` cursor: the last group id of the previous page, marked as ours.
fn encode_list_cursor(group: &str) -> String {
    format!("after:{group}")
}

fn decode_list_cursor(cursor: &str) -> Result<String, ResourceError> {
    cursor
        .strip_prefix("after:")
        .filter(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_owned)
        .ok_or_else(|| ResourceError::Invalid("Invalid cursor".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_pages_round_trip() {
        let plain = parse_uri("awswhitelist://history/sg-0abc").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain, HistoryUri { group: "sg-0abc".into(), cursor: None });
        let cursor = "2026-11-28T09:00:00.123Z~a1b2~outcome";
        let next = page_uri("sg-0abc", cursor);
        assert!(!next[HISTORY_PREFIX.len()..].contains(':'), "{next}");
        let back = parse_uri(&next).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, HistoryUri { group: "sg-0abc".into(), cursor: Some(cursor.into()) });
    }

    #[test]
    fn foreign_or_malformed_uris_are_refused() {
        for uri in [
            "file:///etc/passwd",
            "awswhitelist://history/",
            "awswhitelist://history/../../x",
            "awswhitelist://history/sg-1/extra",
            "awswhitelist://rules/sg-1",
        ] {
            assert!(matches!(parse_uri(uri), Err(ResourceError::NotFound(_))), "{uri}");
        }
        for uri in [
            "awswhitelist://history/sg-1?limit=5",
            "awswhitelist://history/sg-1?cursor=%zz",
            "awswhitelist://history/sg-1?cursor=a&b=c",
        ] {
            assert!(matches!(parse_uri(uri), Err(ResourceError::Invalid(_))), "{uri}");
        }
    }

    #[test]
    fn list_cursors_are_checked() {
        assert_eq!(decode_list_cursor(&encode_list_cursor("sg-0abc")).ok().as_deref(), Some("sg-0abc"));
        for bad in ["", "sg-0abc", "after:", "after:sg 1", "after:../x"] {
            assert!(decode_list_cursor(bad).is_err(), "{bad}");
        }
    }
}
