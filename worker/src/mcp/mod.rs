//! The MCP protocol layer, independent of any transport. HTTP (`POST /mcp`), `stdio` and the
//! proxy parse a body with [`parse_json`] (or call [`Dispatcher::handle_bytes`]), describe the
//! message with a [`TransportMeta`], and turn the [`Outcome`] into a status and bytes.
//!
//! May import: `caller`, and `metrics` to count panics (it knows no tool, no HTTP, no AWS). Imported by: `http`, `tools`
//! (the `Tool` trait), `app`, the binary's `stdio`.
//!
//! # What is implemented
//!
//! - JSON-RPC 2.0 as MCP narrows it ([`jsonrpc`]): ids are strings or integers, never `null`;
//!   `params` is an object; errors echo the id whenever it can be read.
//! - Handshake-era revisions 2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25: `initialize`
//!   (echo a served revision, else offer 2025-11-25), `ping`, `tools/list`, `tools/call`;
//!   notifications and client responses are accepted (HTTP 202). Served statelessly: nothing
//!   needs an earlier `initialize`, no `Mcp-Session-Id` is issued, and the revision of each
//!   request comes from its `MCP-Protocol-Version` header (2025-03-26 when absent). On stdio a
//!   loop may pass the revision `initialize` negotiated ([`Outcome::negotiated_version`]).
//! - Batches for 2025-03-26 and older (and requests without the header); any newer revision
//!   gets HTTP 400 / -32600 saying batches are not part of it. `initialize` inside a batch is
//!   refused. A batch of only notifications and responses yields [`Outcome::Accepted`].
//! - 2026-07-28 ([`era`]), chosen per request when the body's `params._meta` carries
//!   `io.modelcontextprotocol/protocolVersion` or the header names 2026-07-28:
//!   `server/discover` (supportedVersions, capabilities, instructions, `ttlMs`, `cacheScope`),
//!   `tools/list` and `tools/call`; every result has `resultType: "complete"` and
//!   `_meta["io.modelcontextprotocol/serverInfo"]`. The ladder is: envelope present with
//!   protocolVersion and clientCapabilities (-32602, 400); over HTTP `MCP-Protocol-Version`,
//!   `Mcp-Method` and (for `tools/call`) `Mcp-Name` present and equal to the body, `Mcp-Name`
//!   possibly `=?base64?…?=`-encoded, repeated headers refused (-32020, 400); the version
//!   served (-32022, 400, `data: {supported, requested}`); unknown or removed methods
//!   (`initialize`, `ping`, …) are -32601 with HTTP 404.
//! - Fallback: an old client probing `server/discover` under a handshake revision (header
//!   2025-xx, or no header and no `_meta` envelope) gets a plain -32601 with HTTP 200, which is
//!   not a "recognized modern error", so dual-era clients (the Python SDK's auto mode falls back
//!   on any error except -32022) continue with `initialize`. An unknown `MCP-Protocol-Version`
//!   is -32022 with HTTP 400 listing every served revision, so a client can pick one.
//! - `x-mcp-header` ([`headers`]): annotations are checked when a tool is registered (a tool
//!   clients would have to drop is never published); over HTTP the `Mcp-Param-*` headers of a
//!   `tools/call` must agree with its arguments (-32020, 400) before the call runs: present and
//!   equal for every annotated argument under 2026-07-28, equal when present before it.
//! - Resources ([`resource`]): a source implemented outside this layer (the history of each
//!   group), served by `resources/list`, `resources/read` and `resources/templates/list` with
//!   `ttlMs`/`cacheScope` under 2026-07-28, announced in `initialize` and `server/discover`;
//!   not found is -32602 (2026-07-28) or -32002 (before).
//! - `tools/list` answers are prebuilt per revision, page and visible tool set ([`listing`])
//!   and sent as bytes ([`RawReply`]).
//! - Tools ([`tool`], [`registry`], [`schema`]): sorted registry, opaque cursors that any worker
//!   with the same tool list accepts (others: -32602 "Invalid cursor"); argument validation for
//!   a JSON Schema subset; unknown tool is -32602; argument errors are -32602 before 2025-11-25
//!   and `isError` results from then on; tool failures are `isError` results. A tool may say it
//!   is unavailable to a caller ([`Tool::unavailable`]: read-only): it is left out of
//!   `tools/list` and a call of it is an `isError` result with the reason.
//!
//! # Sources (read, not copied)
//!
//! - Specification repository `modelcontextprotocol/modelcontextprotocol` at b0f60ba5:
//!   `docs/specification/2026-07-28/{changelog,basic/index,basic/versioning,
//!   basic/transports/streamable-http,basic/transports/stdio,server/discover,server/tools,
//!   server/resources,server/utilities/caching}.mdx`,
//!   `schema/2026-07-28/schema.ts` and its examples, the same pages of earlier revisions.
//! - Python SDK `modelcontextprotocol/python-sdk` at 57394b05 (`mcp.client._probe`,
//!   `mcp.client.session.send_discover`, `mcp.shared.inbound`, `mcp.server._streamable_http_modern`)
//!   for the probe/fallback policy and the order of the 2026-07-28 checks.
//! - Conformance suite `modelcontextprotocol/conformance` (0.2.0-alpha.12; source read at
//!   c321dd3): the server scenarios `server-initialize`, `ping`, `tools-list`, `sep-2575`
//!   (stateless), `sep-2243` (standard and custom headers) and `caching` (SEP-2549).

#![warn(missing_docs)]

pub mod dispatch;
pub mod era;
pub mod headers;
pub mod info;
pub mod jsonrpc;
pub mod listing;
mod methods;
pub mod parse;
pub mod registry;
pub mod resource;
pub mod schema;
pub mod tool;
pub mod transport;
pub mod version;

#[cfg(test)]
mod tests;

pub use crate::caller::Caller;
pub use dispatch::{Dispatcher, MAX_BATCH};
pub use info::{CacheHint, CacheScope, ServerInfo};
pub use jsonrpc::{object, RequestId, RpcError};
pub use parse::{parse_json, ParseError, MAX_DEPTH};
pub use registry::{Registry, RegistryError};
pub use tool::{
    CallContext, ClientInput, ClientRequester, Tool, ToolAnnotations, ToolError, ToolFuture, ToolOutput,
    ToolSpec,
};
pub use transport::{Outcome, RawReply, RequesterHandle, TransportKind, TransportMeta};
pub use version::ProtocolVersion;
