//! Who the server is, as announced by `initialize`, `server/discover` and every 2026-07-28 result,
//! and the identity tools may report (worker slot, configuration generation).

use serde_json::{json, Map, Value};

/// Whether shared caches may keep a cacheable 2026-07-28 result across authorization contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Holds no caller-specific data.
    Public,
    /// Reusable only within the same authorization context.
    Private,
}

impl CacheScope {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Public => "public",
            CacheScope::Private => "private",
        }
    }
}

/// The `ttlMs` / `cacheScope` pair 2026-07-28 requires on `tools/list` and `server/discover`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheHint {
    /// How long a client may consider the result fresh.
    pub ttl_ms: u64,
    /// Who may share the cached result.
    pub scope: CacheScope,
}

impl Default for CacheHint {
    fn default() -> CacheHint {
        CacheHint { ttl_ms: 60_000, scope: CacheScope::Private }
    }
}

/// The server's identity and the hints attached to its answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    /// Machine name (`serverInfo.name`).
    pub name: String,
    /// Display name (`serverInfo.title`, 2025-06-18 and later).
    pub title: Option<String>,
    /// Software version.
    pub version: String,
    /// Guidance for the model, sent by `initialize` and `server/discover`.
    pub instructions: Option<String>,
    /// The worker slot serving this process (absent for stdio).
    pub worker_id: Option<u32>,
    /// The configuration generation of this worker (absent for stdio).
    pub generation: Option<u64>,
    /// Caching hints for cacheable 2026-07-28 results.
    pub cache: CacheHint,
}

impl ServerInfo {
    /// An identity with a name and version and everything else unset.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> ServerInfo {
        ServerInfo {
            name: name.into(),
            title: None,
            version: version.into(),
            instructions: None,
            worker_id: None,
            generation: None,
            cache: CacheHint::default(),
        }
    }

    /// The `Implementation` object; `title` only where the revision defines it.
    pub fn implementation(&self, with_title: bool) -> Value {
        let mut obj = Map::new();
        obj.insert("name".into(), json!(self.name));
        if let (true, Some(title)) = (with_title, &self.title) {
            obj.insert("title".into(), json!(title));
        }
        obj.insert("version".into(), json!(self.version));
        Value::Object(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implementation_includes_title_only_when_asked() {
        let mut info = ServerInfo::new("awswhitelist", "1.2.3");
        info.title = Some("AWS whitelist".into());
        assert_eq!(info.implementation(false), json!({"name":"awswhitelist","version":"1.2.3"}));
        assert_eq!(
            info.implementation(true),
            json!({"name":"awswhitelist","title":"AWS whitelist","version":"1.2.3"})
        );
    }

    #[test]
    fn cache_defaults_are_conservative() {
        let hint = CacheHint::default();
        assert_eq!(hint.scope.as_str(), "private");
        assert!(hint.ttl_ms > 0);
    }
}
