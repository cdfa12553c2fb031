//! The one trait EC2 sits behind, so the domain can be tested without AWS and the SDK types
//! stay in `crate::aws`.

use std::future::Future;
use std::pin::Pin;

use ipnet::IpNet;

use super::rules::{ExistingRule, RuleSpec};

/// A boxed future of a firewall call (object-safe, `Send` for tokio tasks).
pub type FwFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, FirewallError>> + Send + 'a>>;

/// Which AWS identity and region a call runs with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// A configured credential profile, or the default chain when `None`.
    pub profile: Option<String>,
    /// The region, or the profile's/config's default.
    pub region: Option<String>,
    /// Per-call credentials (compatibility with the reference system), if given and allowed.
    pub keys: Option<Keys>,
}

/// Per-call AWS keys. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Keys {
    /// `AKIA…`/`ASIA…`.
    pub access_key_id: String,
    /// The secret; never logged, never stored beyond the call.
    pub secret_access_key: String,
    /// For temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// Security group rules in one account and region.
pub trait Firewall: Send + Sync {
    /// Every ingress rule of `group`; `GroupNotFound` when the group does not exist.
    fn list<'a>(&'a self, scope: &'a Scope, group: &'a str) -> FwFuture<'a, Vec<ExistingRule>>;
    /// Adds one ingress rule; returns its rule id.
    fn authorize<'a>(
        &'a self,
        scope: &'a Scope,
        spec: &'a RuleSpec,
        description: &'a str,
    ) -> FwFuture<'a, String>;
    /// Removes ingress rules by id.
    fn revoke<'a>(&'a self, scope: &'a Scope, group: &'a str, rule_ids: &'a [String]) -> FwFuture<'a, ()>;
    /// Whether `scope` may revoke the rule `spec`, asked without changing anything (EC2's
    /// `DryRun`): `Ok` when it may, else why not (`PermissionDenied`, …).
    fn can_revoke<'a>(&'a self, scope: &'a Scope, spec: &'a RuleSpec) -> FwFuture<'a, ()>;
    /// Whether `scope` may add the rule `spec`, asked without changing anything (EC2's
    /// `DryRun`): `Ok` when it may, else why not (`PermissionDenied` names the IAM action).
    fn can_authorize<'a>(&'a self, scope: &'a Scope, spec: &'a RuleSpec) -> FwFuture<'a, ()>;
    /// Rewrites the description of the ingress rule `rule_id`, which is exactly `spec` (a
    /// renewal's new signed marker), in place: the rule keeps its id; `RuleNotFound` when it
    /// is gone.
    fn redescribe<'a>(
        &'a self,
        scope: &'a Scope,
        spec: &'a RuleSpec,
        rule_id: &'a str,
        description: &'a str,
    ) -> FwFuture<'a, ()>;
    /// Whether `scope` may rewrite that description, asked without changing anything (EC2's
    /// `DryRun`; an endpoint that ignores it and writes `description` is an error).
    fn can_redescribe<'a>(
        &'a self,
        scope: &'a Scope,
        spec: &'a RuleSpec,
        rule_id: &'a str,
        description: &'a str,
    ) -> FwFuture<'a, ()>;
    /// One page of the security groups whose id matches one of `patterns` (`*` and `?` as in
    /// EC2 filters; empty: every group), from `token` (`None`: the first page). The caller
    /// pages; `next` is `None` on the last page.
    fn groups_page<'a>(
        &'a self,
        scope: &'a Scope,
        patterns: &'a [String],
        token: Option<&'a str>,
    ) -> FwFuture<'a, GroupPage>;
    /// The managed prefix list `id` (`pl-…`) now: its version, size limit and every entry
    /// (`GroupNotFound` when it does not exist). Firewalls without prefix lists refuse.
    fn prefix_list<'a>(&'a self, scope: &'a Scope, id: &'a str) -> FwFuture<'a, PrefixListState> {
        let _ = (scope, id);
        Box::pin(async { Err(no_prefix_lists()) })
    }
    /// Applies `edit` to the list `id` if it is still at `version` (EC2's `CurrentVersion`):
    /// a list changed since it was read fails with the code [`VERSION_CONFLICT`], nothing
    /// applied. Retried by `whitelist::prefix_list`, never here.
    fn modify_prefix_list<'a>(
        &'a self,
        scope: &'a Scope,
        id: &'a str,
        version: i64,
        edit: &'a PrefixListEdit,
    ) -> FwFuture<'a, ()> {
        let _ = (scope, id, version, edit);
        Box::pin(async { Err(no_prefix_lists()) })
    }
    /// Whether `scope` may modify the list `list` (EC2's `DryRun`), asked without changing it.
    fn can_modify_prefix_list<'a>(&'a self, scope: &'a Scope, list: &'a PrefixListState) -> FwFuture<'a, ()> {
        let _ = (scope, list);
        Box::pin(async { Err(no_prefix_lists()) })
    }
}

/// The `code` of a [`FirewallError::Other`] a prefix-list write fails with when the list's
/// version moved since it was read (EC2's `PrefixListVersionMismatch` or `IncorrectState`).
pub const VERSION_CONFLICT: &str = "PrefixListVersionMismatch";

/// What a firewall without prefix lists answers.
fn no_prefix_lists() -> FirewallError {
    FirewallError::Refused {
        code: "PrefixListsUnsupported".into(),
        message: "this firewall does not manage EC2 prefix lists".into(),
    }
}

/// One entry of a prefix list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixListEntry {
    /// The network.
    pub cidr: IpNet,
    /// Its description (up to 255 characters in EC2, like a rule's).
    pub description: String,
}

/// A prefix list as read: what a write is worked out from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrefixListState {
    /// `pl-…`.
    pub id: String,
    /// Its name (the dry run's probe writes it back unchanged).
    pub name: Option<String>,
    /// Its version: the `CurrentVersion` a write must name.
    pub version: i64,
    /// Most entries it may hold (EC2's `MaxEntries`), when known.
    pub max_entries: Option<i32>,
    /// Every entry.
    pub entries: Vec<PrefixListEntry>,
}

/// One write to a prefix list: entries removed (by CIDR) and added, in one new version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrefixListEdit {
    /// Entries to add.
    pub add: Vec<PrefixListEntry>,
    /// CIDRs to remove.
    pub remove: Vec<IpNet>,
}

/// True when `id` names a managed prefix list rather than a security group.
pub fn is_prefix_list(id: &str) -> bool {
    id.starts_with("pl-")
}

/// A security group as the groups and find tools show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupInfo {
    /// `sg-…`.
    pub group_id: String,
    /// The group's name.
    pub name: String,
    /// Its VPC, when it has one.
    pub vpc_id: Option<String>,
    /// Its description.
    pub description: String,
    /// Its tags, by key.
    pub tags: std::collections::BTreeMap<String, String>,
}

/// One page of [`Firewall::groups_page`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPage {
    /// The groups on this page.
    pub groups: Vec<GroupInfo>,
    /// The token of the next page; `None` on the last.
    pub next: Option<String>,
}

/// "security group" or "prefix list", by the id's prefix (for messages).
fn kind_of(id: &str) -> &'static str {
    if id.starts_with("pl-") {
        "prefix list"
    } else {
        "security group"
    }
}

/// Why a firewall call failed, in terms a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    /// The group does not exist in that account/region.
    #[error("{} {group} was not found (check the id and the region {region})", kind_of(group))]
    GroupNotFound {
        /// The group.
        group: String,
        /// The region asked.
        region: String,
    },
    /// The rule already exists.
    #[error("the rule already exists")]
    Duplicate,
    /// The rule to remove is not there.
    #[error("the rule was not found")]
    RuleNotFound,
    /// The group cannot take more rules.
    #[error("security group {group} has reached its rule limit; remove unused rules or ask AWS for a higher quota")]
    RuleLimit {
        /// The group.
        group: String,
    },
    /// IAM refused.
    #[error(
        "AWS denied {action}: {detail} (grant the IAM action {action} on that resource to this server's \
         identity; the README's \"Go live\" has a least-privilege policy)"
    )]
    PermissionDenied {
        /// The IAM action, e.g. `ec2:AuthorizeSecurityGroupIngress`.
        action: String,
        /// The resource it was denied on, and AWS's message.
        detail: String,
    },
    /// The credentials are wrong or expired.
    #[error("AWS rejected the credentials: {0}")]
    BadCredentials(String),
    /// AWS throttled after retries.
    #[error(
        "AWS is throttling {action} (its API rate limit): the call was retried with backoff, \
         aws.max_attempts times in all, and still refused; try again in a few seconds, or spread the \
         calls out"
    )]
    Throttled {
        /// The API call.
        action: String,
    },
    /// No answer in time.
    #[error("AWS did not answer {action} in time")]
    Timeout {
        /// The API call.
        action: String,
    },
    /// The call cannot be made as asked (unknown profile, per-call keys switched off, no
    /// region): nothing was sent to AWS.
    #[error("{message}")]
    Refused {
        /// A stable name for the reason, e.g. `UnknownProfile`.
        code: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// Anything else, with AWS's code and message.
    #[error("AWS error in {action}: {code}: {message}")]
    Other {
        /// The API call.
        action: String,
        /// AWS's error code.
        code: String,
        /// AWS's message.
        message: String,
    },
}
