//! The MCP tools this server offers, each in its own file: its name, schemas, the scope it
//! needs, and the adapter from JSON arguments to the whitelist domain. Adding a tool means
//! adding a file here and one line in [`register_all`]; nothing in `auth/`, `http/` or `mcp/`
//! changes.
//!
//! May import: `mcp` (the tool trait), `whitelist` (the domain),
//! `auth` (scope names), `caller`. Imported by: `app` only.

mod args;
pub mod consent;
pub mod lifecycle;
pub mod resources;
pub mod status;
pub mod whitelist;

use std::sync::Arc;

use crate::mcp::{Registry, RegistryError};
use crate::whitelist::{ConsentSeal, Whitelist};

pub use status::{standard_registry, ServiceStatus};

/// Every tool of the server on one registry: `service_status`, the four whitelist tools and
/// the lifecycle tools (`seal` makes the request states of consent questions).
pub fn register_all(
    page_size: usize,
    service: Arc<Whitelist>,
    seal: Option<Arc<ConsentSeal>>,
) -> Result<Registry, RegistryError> {
    let mut registry = standard_registry(page_size)?;
    whitelist::register(&mut registry, service.clone(), seal.clone())?;
    lifecycle::register(&mut registry, service, seal)?;
    Ok(registry)
}
