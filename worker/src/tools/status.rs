//! `service_status`: which process answered, its configuration generation and the protocol
//! revisions it speaks (handy when checking that one conversation's requests land on different
//! workers). Read-only; needs `whitelist:read` like the other reading tools.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::auth::SCOPE_READ;
use crate::mcp::{
    CallContext, ProtocolVersion, Registry, RegistryError, Tool, ToolAnnotations, ToolFuture, ToolOutput,
    ToolSpec,
};

/// The `service_status` tool.
pub struct ServiceStatus {
    spec: ToolSpec,
}

impl ServiceStatus {
    /// The tool with its fixed description and schemas.
    pub fn new() -> ServiceStatus {
        ServiceStatus {
            spec: ToolSpec {
                name: "service_status".into(),
                title: Some("Service status".into()),
                description: "Report the service name, version, the worker process that \
                              answered, its configuration generation, and the MCP protocol \
                              versions it speaks. Takes no arguments and changes nothing."
                    .into(),
                input_schema: json!({
                    "type": "object",
                    "properties": {},
                    "additionalProperties": false
                }),
                output_schema: Some(output_schema()),
                annotations: ToolAnnotations {
                    read_only: true,
                    destructive: false,
                    idempotent: true,
                    open_world: false,
                },
                scope: Some(SCOPE_READ),
            },
        }
    }
}

impl Default for ServiceStatus {
    fn default() -> ServiceStatus {
        ServiceStatus::new()
    }
}

fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "service": {"type": "string"},
            "version": {"type": "string"},
            "worker": {"type": ["integer", "null"], "description": "worker slot; null over stdio"},
            "generation": {"type": ["integer", "null"], "description": "configuration generation"},
            "protocol_versions": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["service", "version", "worker", "generation", "protocol_versions"],
        "additionalProperties": false
    })
}

impl Tool for ServiceStatus {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, _args: Map<String, Value>, ctx: &'a CallContext) -> ToolFuture<'a> {
        let server = &ctx.server;
        let status = json!({
            "service": server.name,
            "version": server.version,
            "worker": server.worker_id,
            "generation": server.generation,
            "protocol_versions": ProtocolVersion::supported_strings(),
        });
        Box::pin(async move { Ok(ToolOutput::structured(status)) })
    }
}

/// A registry holding only `service_status`, listing `page_size` per page: what the MCP layer's
/// own tests and a tool-less server start from.
pub fn standard_registry(page_size: usize) -> Result<Registry, RegistryError> {
    let mut registry = Registry::new(page_size);
    registry.register(Arc::new(ServiceStatus::new()))?;
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::info::ServerInfo;
    use crate::mcp::jsonrpc::RequestId;
    use crate::mcp::schema;

    fn ctx(worker: Option<u32>) -> CallContext {
        let mut info = ServerInfo::new("awswhitelist", "0.1.0");
        info.worker_id = worker;
        info.generation = worker.map(|_| 3);
        CallContext {
            request_id: RequestId::Num(1.into()),
            protocol_version: ProtocolVersion::LATEST,
            caller: Arc::default(),
            server: Arc::new(info),
            client: crate::mcp::ClientInput::default(),
            requester: None,
        }
    }

    #[tokio::test]
    async fn reports_identity_matching_its_output_schema() {
        let tool = ServiceStatus::new();
        for worker in [Some(2), None] {
            let out = tool.call(Map::new(), &ctx(worker)).await;
            let out = out.unwrap_or_else(|e| panic!("{e}"));
            let mut structured = out.structured.clone().unwrap_or_default();
            assert_eq!(schema::validate(&output_schema(), &mut structured), Ok(()));
            assert_eq!(structured["service"], json!("awswhitelist"));
            assert_eq!(structured["worker"], json!(worker));
            assert_eq!(structured["protocol_versions"][0], json!("2026-07-28"));
            assert_eq!(serde_json::from_str::<Value>(&out.text).ok(), out.structured);
        }
    }

    #[test]
    fn registers_cleanly() {
        let registry = standard_registry(50).unwrap_or_else(|e| panic!("{e}"));
        let status = registry.get("service_status").map(|t| t.spec().scope);
        assert_eq!(status, Some(Some(SCOPE_READ)), "service_status is a reading tool");
        assert!(schema::check_schema(&output_schema()).is_ok());
    }
}
