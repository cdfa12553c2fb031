//! `tools/list` answers prebuilt: the serialised result of one page is made once per protocol
//! revision, page and set of tools the caller may see (scopes, read-only), then served as bytes
//! (no `serde_json::Value` built or serialised per request). A dispatcher lives as long as its
//! settings (a reload starts new workers with new dispatchers), so a page is made at most once per
//! settings revision and worker. The content is what [`methods::tools_list`] builds: a miss calls
//! it, so the two cannot drift apart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::info::ServerInfo;
use super::jsonrpc::RpcError;
use super::methods;
use super::registry::Registry;
use super::version::ProtocolVersion;
use crate::caller::Caller;

/// Most pages kept (revisions × pages × visible sets; a handful in practice).
const MAX_PAGES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    version: ProtocolVersion,
    /// Where the page starts (the cursor, checked and decoded by the registry).
    start: usize,
    /// Bit `i` set: tool `i` of the registry is shown to this caller.
    visible: u128,
}

/// The prebuilt pages of one dispatcher.
#[derive(Default)]
pub struct ToolLists {
    pages: Mutex<HashMap<Key, Arc<str>>>,
}

impl ToolLists {
    /// The serialised `result` of `tools/list` for this request (with `resultType` and the
    /// server's `_meta` under 2026-07-28), from the prebuilt pages when it was made before.
    pub fn result(
        &self,
        registry: &Registry,
        info: &ServerInfo,
        version: ProtocolVersion,
        params: Option<&Map<String, Value>>,
        caller: &Caller,
    ) -> Result<Arc<str>, RpcError> {
        let cursor = methods::cursor_param(params)?;
        let start = registry.page_start(cursor).map_err(|e| RpcError::invalid_params(e.to_string()))?;
        let key = visible(registry, caller).map(|visible| Key { version, start, visible });
        if let Some(hit) = key.and_then(|k| self.pages.lock().ok()?.get(&k).cloned()) {
            return Ok(hit);
        }
        let mut result = methods::tools_list(registry, info, version, params, caller)?;
        if version.is_modern() {
            result = methods::decorate_modern(result, info);
        }
        let bytes: Arc<str> = Arc::from(result.to_string());
        if let (Some(key), Ok(mut pages)) = (key, self.pages.lock()) {
            if pages.len() < MAX_PAGES {
                pages.insert(key, bytes.clone());
            }
        }
        Ok(bytes)
    }
}

/// Which tools `caller` sees, as a bit set; `None` past 128 tools (then nothing is kept).
fn visible(registry: &Registry, caller: &Caller) -> Option<u128> {
    if registry.tools().len() > 128 {
        return None;
    }
    let mut bits = 0u128;
    for (i, tool) in registry.tools().iter().enumerate() {
        if methods::visible_to(tool.as_ref(), caller) {
            bits |= 1 << i;
        }
    }
    Some(bits)
}
