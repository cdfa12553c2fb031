//! The MCP tools this server offers, each in its own file: its name, schemas, the scope it
//! needs, and the adapter from JSON arguments to the whitelist domain. Adding a tool means
//! adding a file here and one line in [`register_all`]; nothing in `auth/`, `http/` or `mcp/`
//! changes.
//!
//! May import: `mcp` (the tool trait), `whitelist` (the domain),
//! `auth` (scope names), `caller`. Imported by: `app` only.

mod args;
pub mod lifecycle;
pub mod status;
pub mod whitelist;

use std::sync::Arc;

use crate::mcp::{Registry, RegistryError};
use crate::whitelist::Whitelist;

pub use status::{standard_registry, ServiceStatus};

/// Every tool of the server on one registry: `service_status`, the four whitelist tools and
/// the lifecycle tools (groups, find).
pub fn register_all(page_size: usize, service: Arc<Whitelist>) -> Result<Registry, RegistryError> {
    let mut registry = standard_registry(page_size)?;
    whitelist::register(&mut registry, service.clone())?;
    lifecycle::register(&mut registry, service)?;
    Ok(registry)
}
