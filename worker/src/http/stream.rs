//! Server-to-client requests on the legacy Streamable HTTP transport (2025-06-18, 2025-11-25):
//! a `tools/call` that must ask the client something (`elicitation/create`) turns its POST's
//! answer into a `text/event-stream`, sends the request there, and waits for the client's
//! JSON-RPC response, which arrives as a new POST — on any worker.
//!
//! - The request's id names the worker that waits: `awswl-<slot>-<pid>-<nonce>`.
//! - A worker that receives a response with such an id delivers it to its own [`Waiters`], or
//!   hands it to the supervisor for the worker with that pid (`WorkerMessage::Forward`), which
//!   delivers it there. Either way the POST is answered 202.
//! - A response is taken only from the caller the question was put to (same identity).

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use hyper::body::{Bytes, Frame};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::mcp::ClientRequester;

/// A waiter's answer channel and whom it may come from.
struct Waiter {
    identity: Option<String>,
    tx: oneshot::Sender<Value>,
}

/// The client requests this worker waits on, by JSON-RPC id.
pub struct Waiters {
    prefix: String,
    waiting: Mutex<HashMap<String, Waiter>>,
}

/// Why an answer was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// No question with this id is waiting here (answered already, timed out, or made up).
    Unknown,
    /// The answer came from another caller than the one asked.
    OtherCaller,
}

impl Waiters {
    /// Waiters of the worker in `slot` with process id `pid`.
    pub fn new(slot: u32, pid: u32) -> Waiters {
        Waiters { prefix: format!("awswl-{slot}-{pid}-"), waiting: Mutex::new(HashMap::new()) }
    }

    fn register(&self, identity: Option<String>) -> (String, oneshot::Receiver<Value>) {
        let mut nonce = [0u8; 12];
        // A nonce that is not random is still unique per process with the counter below.
        let _ = aws_lc_rs::rand::fill(&mut nonce);
        let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let id = format!("{}{hex}", self.prefix);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Waiter { identity, tx });
        (id, rx)
    }

    fn cancel(&self, id: &str) {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    /// Hands `response` (a JSON-RPC response object) to the question with its id.
    pub fn deliver(&self, response: Value, identity: Option<&str>) -> Result<(), Undelivered> {
        let id = response.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.get(&id) {
            None => return Err(Undelivered::Unknown),
            Some(w) if w.identity.as_deref() != identity => return Err(Undelivered::OtherCaller),
            Some(_) => {}
        }
        if let Some(w) = waiting.remove(&id) {
            let _ = w.tx.send(response);
        }
        Ok(())
    }
}

/// The pid of the worker waiting for the response with this id, if the id is one of ours.
pub fn owner_pid(id: &str) -> Option<i32> {
    let mut parts = id.strip_prefix("awswl-")?.split('-');
    let (_slot, pid, nonce) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && nonce.len() == 24).then_some(())?;
    pid.parse().ok()
}

/// The forwarded form of a response: what the caller was, and the response.
pub fn forward_payload(response: &Value, identity: Option<&str>) -> String {
    json!({"identity": identity, "response": response}).to_string()
}

/// Delivers a forwarded payload to `waiters`.
pub fn deliver_forwarded(waiters: &Waiters, payload: &str) -> Result<(), Undelivered> {
    let v: Value = serde_json::from_str(payload).map_err(|_| Undelivered::Unknown)?;
    let identity = v.get("identity").and_then(Value::as_str).map(str::to_string);
    let response = v.get("response").cloned().unwrap_or(Value::Null);
    waiters.deliver(response, identity.as_deref())
}

/// Sends requests on one POST's event stream and waits for their answers.
pub struct StreamRequester {
    /// Messages for the stream (the HTTP handler turns the first into the SSE switch).
    pub events: mpsc::UnboundedSender<Value>,
    /// Where the answers are awaited.
    pub waiters: Arc<Waiters>,
    /// Who the answer must come from.
    pub identity: Option<String>,
}

/// Removes a waiter however the wait ends (answered, timed out, request dropped).
struct Cancel<'a>(&'a Waiters, String);

impl Drop for Cancel<'_> {
    fn drop(&mut self) {
        self.0.cancel(&self.1);
    }
}

impl ClientRequester for StreamRequester {
    fn request<'a>(
        &'a self,
        method: &'a str,
        params: Value,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Value, String>> + Send + 'a>> {
        Box::pin(async move {
            let (id, rx) = self.waiters.register(self.identity.clone());
            let _cancel = Cancel(&self.waiters, id.clone());
            let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            self.events.send(request).map_err(|_| "the client's stream is closed".to_string())?;
            let response = rx.await.map_err(|_| "the question was withdrawn".to_string())?;
            match (response.get("result"), response.get("error")) {
                (Some(result), _) => Ok(result.clone()),
                (None, Some(e)) => Err(format!(
                    "the client answered with an error: {}",
                    e.get("message").and_then(Value::as_str).unwrap_or("(no message)")
                )),
                (None, None) => Err("the client's answer has neither result nor error".into()),
            }
        })
    }
}

/// One server-sent event carrying a JSON-RPC message.
pub fn event(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

/// A response body fed event by event; it ends when the sender is dropped.
pub struct EventBody(pub mpsc::UnboundedReceiver<Bytes>);

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_reaches_its_question_only_from_the_caller_asked() {
        let waiters = Arc::new(Waiters::new(2, 4242));
        let (events, mut stream) = mpsc::unbounded_channel();
        let requester =
            StreamRequester { events, waiters: waiters.clone(), identity: Some("key:alice".into()) };
        let asking =
            tokio::spawn(async move { requester.request("elicitation/create", json!({"m": 1})).await });
        let sent = stream.recv().await.unwrap();
        let id = sent["id"].as_str().unwrap().to_string();
        assert_eq!(owner_pid(&id), Some(4242));
        assert_eq!(sent["method"], "elicitation/create");
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept"}});
        assert_eq!(waiters.deliver(answer.clone(), Some("key:bob")), Err(Undelivered::OtherCaller));
        // Through the supervisor: the forwarded form.
        deliver_forwarded(&waiters, &forward_payload(&answer, Some("key:alice"))).unwrap();
        assert_eq!(asking.await.unwrap(), Ok(json!({"action": "accept"})));
        assert_eq!(waiters.deliver(answer, Some("key:alice")), Err(Undelivered::Unknown), "answered once");
    }

    #[test]
    fn only_our_ids_name_an_owner() {
        assert_eq!(owner_pid("awswl-1-77-0123456789abcdef01234567"), Some(77));
        for other in [
            "1",
            "awswl-1-77",
            "awswl-1-x-0123456789abcdef01234567",
            "awswl-1-77-short",
            "awswl-1-77-0123456789abcdef01234567-9",
        ] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }
}
