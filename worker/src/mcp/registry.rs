//! The tools a server offers, in a deterministic order, with stateless cursor pagination.
//!
//! A cursor encodes a fingerprint of the tool list and an offset, so any worker with the same
//! tools can continue a listing another worker started, and a cursor from a different tool list
//! (another deployment, a forged value) is refused with -32602 instead of skipping tools.

use std::sync::Arc;

use super::headers::{self, HeaderParam};
use super::schema;
use super::tool::Tool;

/// Why a tool could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Names must be unique.
    #[error("a tool named {0:?} is already registered")]
    Duplicate(String),
    /// Names are 1–128 characters of `A-Z a-z 0-9 _ - .`.
    #[error("invalid tool name {0:?}: use 1-128 letters, digits, '_', '-' or '.'")]
    BadName(String),
    /// The input schema uses something the validator does not enforce.
    #[error("tool {name:?}: {reason}")]
    BadSchema {
        /// The tool.
        name: String,
        /// What is wrong with its schema.
        reason: String,
    },
}

/// A cursor that this registry did not issue, or that no longer fits its tool list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Invalid cursor")]
pub struct InvalidCursor;

/// One page of a listing.
pub struct Page<'a> {
    /// The tools on this page, in listing order.
    pub tools: &'a [Arc<dyn Tool>],
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

/// The set of tools a dispatcher serves.
pub struct Registry {
    tools: Vec<Arc<dyn Tool>>,
    /// The `x-mcp-header` parameters of each tool, in the order of `tools`.
    headers: Vec<Vec<HeaderParam>>,
    page_size: usize,
    fingerprint: u64,
}

impl Registry {
    /// An empty registry listing `page_size` tools per page (at least one).
    pub fn new(page_size: usize) -> Registry {
        Registry {
            tools: Vec::new(),
            headers: Vec::new(),
            page_size: page_size.max(1),
            fingerprint: fingerprint(&[]),
        }
    }

    /// Adds a tool, keeping the list sorted by name (stable order for client-side caching).
    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<(), RegistryError> {
        let spec = tool.spec();
        if !valid_name(&spec.name) {
            return Err(RegistryError::BadName(spec.name.clone()));
        }
        schema::check_schema(&spec.input_schema)
            .map_err(|reason| RegistryError::BadSchema { name: spec.name.clone(), reason })?;
        let declared = headers::annotations(&spec.input_schema)
            .map_err(|reason| RegistryError::BadSchema { name: spec.name.clone(), reason })?;
        let at = match self.tools.binary_search_by(|t| t.spec().name.cmp(&spec.name)) {
            Ok(_) => return Err(RegistryError::Duplicate(spec.name.clone())),
            Err(at) => at,
        };
        self.tools.insert(at, tool);
        self.headers.insert(at, declared);
        let names: Vec<&str> = self.tools.iter().map(|t| t.spec().name.as_str()).collect();
        self.fingerprint = fingerprint(&names);
        Ok(())
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.binary_search_by(|t| t.spec().name.as_str().cmp(name)).ok().and_then(|i| self.tools.get(i))
    }

    /// The parameters of tool `name` mirrored into `Mcp-Param-*` headers (none for an unknown tool).
    pub fn header_params(&self, name: &str) -> &[HeaderParam] {
        let at = self.tools.binary_search_by(|t| t.spec().name.as_str().cmp(name)).ok();
        at.and_then(|i| self.headers.get(i)).map_or(&[], Vec::as_slice)
    }

    /// Every tool, in listing order.
    pub fn tools(&self) -> &[Arc<dyn Tool>] {
        &self.tools
    }

    /// Tools per page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Where the page at `cursor` starts (0 for the first page), or why the cursor is refused.
    pub fn page_start(&self, cursor: Option<&str>) -> Result<usize, InvalidCursor> {
        match cursor {
            None => Ok(0),
            Some(c) => self.decode_cursor(c),
        }
    }

    /// The page starting at `cursor` (the first page when `None`).
    pub fn page(&self, cursor: Option<&str>) -> Result<Page<'_>, InvalidCursor> {
        let start = self.page_start(cursor)?;
        let end = (start + self.page_size).min(self.tools.len());
        let next_cursor = (end < self.tools.len()).then(|| self.encode_cursor(end));
        Ok(Page { tools: &self.tools[start..end], next_cursor })
    }

    fn encode_cursor(&self, offset: usize) -> String {
        format!("{:016x}{:08x}", self.fingerprint, offset)
    }

    fn decode_cursor(&self, cursor: &str) -> Result<usize, InvalidCursor> {
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if cursor.len() != 24 || !hex(cursor) {
            return Err(InvalidCursor);
        }
        let (fp, offset) = cursor.split_at(16);
        let fp = u64::from_str_radix(fp, 16).map_err(|_| InvalidCursor)?;
        let offset = usize::from_str_radix(offset, 16).map_err(|_| InvalidCursor)?;
        if fp != self.fingerprint || offset == 0 || offset >= self.tools.len() {
            return Err(InvalidCursor);
        }
        Ok(offset)
    }
}

fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// FNV-1a over the names, each terminated, so the fingerprint changes with the tool list.
fn fingerprint(names: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in names {
        for b in name.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::mcp::tool::{CallContext, ToolAnnotations, ToolFuture, ToolOutput, ToolSpec};

    struct Named(ToolSpec);

    impl Tool for Named {
        fn spec(&self) -> &ToolSpec {
            &self.0
        }
        fn call<'a>(&'a self, _: Map<String, Value>, _: &'a CallContext) -> ToolFuture<'a> {
            Box::pin(async { Ok(ToolOutput::text("ok")) })
        }
    }

    fn tool(name: &str) -> Arc<dyn Tool> {
        Arc::new(Named(ToolSpec {
            name: name.into(),
            title: None,
            description: "d".into(),
            input_schema: json!({"type": "object"}),
            output_schema: None,
            annotations: ToolAnnotations::default(),
            scope: None,
        }))
    }

    fn registry(names: &[&str], page_size: usize) -> Registry {
        let mut r = Registry::new(page_size);
        for n in names {
            r.register(tool(n)).unwrap_or_else(|e| panic!("{e}"));
        }
        r
    }

    fn names(page: &Page<'_>) -> Vec<String> {
        page.tools.iter().map(|t| t.spec().name.clone()).collect()
    }

    #[test]
    fn listing_is_sorted_and_paged_until_the_end() {
        let r = registry(&["e", "c", "a", "d", "b"], 2);
        let mut cursor = None;
        let mut seen = Vec::new();
        loop {
            let page = r.page(cursor.as_deref()).unwrap_or_else(|e| panic!("{e}"));
            seen.extend(names(&page));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn a_full_first_page_has_no_cursor() {
        let r = registry(&["a", "b"], 2);
        let page = r.page(None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((names(&page).len(), page.next_cursor), (2, None));
        assert!(registry(&[], 3).page(None).is_ok_and(|p| p.tools.is_empty()));
    }

    #[test]
    fn cursors_survive_other_instances_but_not_other_tool_lists() {
        let a = registry(&["a", "b", "c"], 1);
        let b = registry(&["c", "b", "a"], 1); // another worker, same tools
        let cursor = a.page(None).ok().and_then(|p| p.next_cursor);
        let cursor = cursor.unwrap_or_else(|| panic!("no cursor"));
        assert!(b.page(Some(&cursor)).is_ok_and(|p| names(&p) == ["b"]));
        let other = registry(&["a", "b", "x"], 1);
        assert!(other.page(Some(&cursor)).is_err());
    }

    #[test]
    fn bad_cursors_are_refused() {
        let r = registry(&["a", "b", "c"], 1);
        let good = r.encode_cursor(1);
        let cases = [
            String::new(),
            "nope".into(),
            good.to_uppercase(),
            format!("{good}0"),
            r.encode_cursor(0),
            r.encode_cursor(3),
            r.encode_cursor(99),
            format!("{:016x}{:08x}", r.fingerprint ^ 1, 1),
            "zzzzzzzzzzzzzzzzzzzzzzzz".into(),
        ];
        for c in cases {
            assert_eq!(r.page(Some(&c)).err(), Some(InvalidCursor), "{c}");
        }
    }

    #[test]
    fn registration_rules() {
        let mut r = registry(&["a"], 5);
        assert_eq!(r.register(tool("a")), Err(RegistryError::Duplicate("a".into())));
        for bad in ["", "has space", "comma,", &"x".repeat(129)] {
            assert!(matches!(r.register(tool(bad)), Err(RegistryError::BadName(_))));
        }
        assert!(r.register(tool("ok.name-2_x")).is_ok());
        assert!(r.get("ok.name-2_x").is_some() && r.get("missing").is_none());
        assert_eq!(r.tools().len(), 2);
    }
}
