//! Asking the person behind an MCP client whether a change may be made ([`McpAsker`], the
//! domain's [`Asker`] for one tool call), in the way the call's protocol revision allows:
//!
//! - 2026-07-28: an `InputRequiredResult` carrying an `elicitation/create` form (a `confirm`
//!   boolean) and a sealed `requestState`; the client's retry carries the answer and the state,
//!   which is checked (integrity, caller, change, expiry) and consumed once host-wide (fleet-wide
//!   with `[redis]`). The retry may land on any worker: everything it needs is in the request.
//! - Handshake revisions, when the transport can send the client a request while the call runs
//!   (a [`ClientRequester`](crate::mcp::ClientRequester)) and the client declared elicitation:
//!   `elicitation/create` sent and its answer awaited, at most the consent TTL.
//! - Otherwise: refused, saying a person's consent is required and naming `[policy.consent]`.
//!
//! The client's answer is only as honest as the client: elicitation cannot prove a person saw
//! the form. What the server guarantees is that a consent applies to the exact change shown, by
//! the caller it was shown to, once, within its time.

use std::time::SystemTime;

use serde_json::{json, Value};
use tracing::info;

use crate::mcp::CallContext;
use crate::whitelist::consent::{cannot_ask, AskFuture};
use crate::whitelist::{Asker, ConsentSeal, Consented, ProposedChange, StateError, Stop};

/// The key of the one input request this server sends.
pub const INPUT_KEY: &str = "consent";
/// The boolean field of the consent form.
pub const CONFIRM: &str = "confirm";

/// The asker of one tool call.
pub(super) struct McpAsker<'a> {
    /// The call.
    pub ctx: &'a CallContext,
    /// Seals request states; `None` when this process has none (then nothing can be asked).
    pub seal: Option<&'a ConsentSeal>,
    /// The tool's name, shown in the question.
    pub tool: &'a str,
}

impl Asker for McpAsker<'_> {
    fn ask<'a>(&'a self, change: &'a ProposedChange, reasons: &'a [String]) -> AskFuture<'a> {
        Box::pin(async move {
            let Some(seal) = self.seal else {
                return Err(refused(cannot_ask(reasons, "this server process has no consent key")));
            };
            if self.ctx.protocol_version.is_modern() {
                return self.stateless(seal, change, reasons).await;
            }
            match &self.ctx.requester {
                Some(requester) if self.ctx.client.can_elicit_form() => {
                    self.count_asked("elicitation");
                    let params = form(self.ctx, self.tool, change, reasons, seal);
                    let asked =
                        tokio::time::timeout(seal.ttl(), requester.request("elicitation/create", params));
                    match asked.await {
                        Err(_) => Err(Stop::Refused {
                            message: format!(
                                "refused: nobody answered the consent question within {} s \
                                 ([policy.consent] state_ttl_seconds); nothing was changed",
                                seal.ttl().as_secs()
                            ),
                            event: "expired",
                        }),
                        Ok(Err(why)) => Err(refused(format!(
                            "refused: the client could not ask for consent ({why}); nothing was changed"
                        ))),
                        Ok(Ok(result)) => self.decision(&result, "elicitation"),
                    }
                }
                _ => Err(refused(cannot_ask(reasons, &self.why_not()))),
            }
        })
    }
}

impl McpAsker<'_> {
    /// 2026-07-28: read the answer of a retry, or ask with an `InputRequiredResult`.
    async fn stateless(
        &self,
        seal: &ConsentSeal,
        change: &ProposedChange,
        reasons: &[String],
    ) -> Result<Consented, Stop> {
        let subject = subject(self.ctx);
        let digest = change.digest();
        let now = SystemTime::now();
        if let Some(state) = &self.ctx.client.request_state {
            let verified = seal.verify(state, &subject, &digest, now).map_err(state_refused)?;
            let answer = self.ctx.client.input_responses.as_ref().and_then(|r| r.get(INPUT_KEY));
            // A state without its answer: the question is asked again (a new state).
            if let Some(answer) = answer {
                info!(
                    event = "consent_answer",
                    worker = self.ctx.server.worker_id.map_or(-1, i64::from),
                    via = "input_required",
                    "the answer to a consent question arrived on this worker"
                );
                let decision = self.decision(answer, "input_required");
                seal.consume(&verified).await.map_err(state_refused)?;
                return decision;
            }
        }
        if !self.ctx.client.can_elicit_form() {
            return Err(refused(cannot_ask(reasons, &self.why_not())));
        }
        let state = seal.issue(&subject, &digest, now).map_err(|e| refused(format!("refused: {e}")))?;
        self.count_asked("input_required");
        Err(Stop::InputRequired(json!({
            "resultType": "input_required",
            "inputRequests": {
                INPUT_KEY: {
                    "method": "elicitation/create",
                    "params": form(self.ctx, self.tool, change, reasons, seal),
                }
            },
            "requestState": state,
        })))
    }

    /// An `ElicitResult` as a decision: accept with `confirm: true` consents; anything else
    /// (decline, cancel, accept without confirming) leaves everything as it is.
    fn decision(&self, result: &Value, via: &'static str) -> Result<Consented, Stop> {
        let asked = self.asked();
        let confirmed = result.pointer(&format!("/content/{CONFIRM}")).and_then(Value::as_bool) == Some(true);
        match result.get("action").and_then(Value::as_str) {
            Some("accept") if confirmed => Ok(Consented { asked, via }),
            Some("accept") | Some("decline") => Err(Stop::Declined { asked, via, cancelled: false }),
            Some("cancel") => Err(Stop::Declined { asked, via, cancelled: true }),
            _ => Err(refused(
                "refused: the answer to the consent question is not an elicitation result \
                 (action accept, decline or cancel); nothing was changed"
                    .into(),
            )),
        }
    }

    /// Who was asked: the caller, through which client.
    fn asked(&self) -> String {
        let who = self.ctx.caller.identity.as_deref().unwrap_or("anonymous").to_string();
        match &self.ctx.client.client_name {
            Some(client) => format!("{who} via {client}"),
            None => who,
        }
    }

    fn why_not(&self) -> String {
        if self.ctx.protocol_version.is_modern() {
            "this client did not declare the elicitation capability (form mode) in this request's \
             _meta, so nobody can be asked"
                .into()
        } else {
            format!(
                "this client cannot be asked (protocol {}: it must declare the elicitation capability \
                 at initialize and, over HTTP, send the Mcp-Session-Id this server issues and accept \
                 text/event-stream)",
                self.ctx.protocol_version
            )
        }
    }

    fn count_asked(&self, via: &'static str) {
        crate::metrics::global().consent.with_label_values(&["asked"]).inc();
        info!(
            event = "consent_asked",
            worker = self.ctx.server.worker_id.map_or(-1, i64::from),
            via,
            tool = self.tool,
            "a person's consent is asked for through the client"
        );
    }
}

/// The form a person sees: the exact change, who asks, why consent is needed, one checkbox.
fn form(
    ctx: &CallContext,
    tool: &str,
    change: &ProposedChange,
    reasons: &[String],
    seal: &ConsentSeal,
) -> Value {
    let message = format!(
        "{} asks for your consent ({tool}): {} Why a person must agree: {}. Answer within {} s; \
         nothing changes unless you confirm.",
        ctx.server.name,
        change.describe(),
        reasons.join("; "),
        seal.ttl().as_secs()
    );
    json!({
        "mode": "form",
        "message": message,
        "requestedSchema": {
            "type": "object",
            "properties": {
                CONFIRM: {
                    "type": "boolean",
                    "title": "Make this change",
                    "description": "Check to allow exactly the change described; leave unchecked or decline to refuse it.",
                    "default": false
                }
            },
            "required": [CONFIRM]
        }
    })
}

/// What a request state is bound to: the authenticated identity; without authentication, the
/// caller's address (all there is).
fn subject(ctx: &CallContext) -> String {
    match (&ctx.caller.identity, ctx.caller.addr) {
        (Some(id), _) => format!("id:{id}"),
        (None, Some(addr)) => format!("anonymous@{addr}"),
        (None, None) => "anonymous".into(),
    }
}

fn refused(message: String) -> Stop {
    Stop::Refused { message, event: "refused" }
}

fn state_refused(e: StateError) -> Stop {
    let event = if matches!(e, StateError::Expired(_)) { "expired" } else { "refused" };
    Stop::Refused { message: format!("refused: {e}; nothing was changed"), event }
}
