//! Ties a change to CloudTrail: while the AWS calls of one change run, the AWS layer notes here
//! the account they ran in and the request id AWS gave each (CloudTrail's `recipientAccountId`
//! and `requestID`), and reads who the change is made for (it names that caller in its user
//! agent and, for a profile that assumes a role, in the role session name). The audit entries
//! of the change then carry the account and the request ids.
//!
//! The collection is scoped to the future of the call (a tokio task-local), so concurrent
//! changes in one worker never see each other's receipts; outside a collection, noting is a
//! no-op and there is no caller.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

/// What AWS answered the calls of one change with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipts {
    /// The AWS account the calls ran in (STS GetCallerIdentity of their credentials, cached).
    pub account: Option<String>,
    /// AWS's request id of each call, in order (a prefix-list retry makes several).
    pub request_ids: Vec<String>,
}

struct Collecting {
    caller: String,
    receipts: Mutex<Receipts>,
}

tokio::task_local! {
    static COLLECTING: Arc<Collecting>;
}

/// Runs `calls` (the AWS calls of one change, made for `caller`), returning what they
/// answered and the receipts the AWS layer noted meanwhile.
pub async fn collect<F: Future>(caller: &str, calls: F) -> (F::Output, Receipts) {
    let c = Arc::new(Collecting { caller: caller.to_string(), receipts: Mutex::default() });
    let out = COLLECTING.scope(c.clone(), calls).await;
    let receipts = c.receipts.lock().unwrap_or_else(PoisonError::into_inner).clone();
    (out, receipts)
}

/// Notes one call's account and request id (either may be unknown); a no-op outside
/// [`collect`].
pub fn note(account: Option<&str>, request_id: Option<&str>) {
    let _ = COLLECTING.try_with(|c| {
        let mut r = c.receipts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = account {
            r.account = Some(a.to_string());
        }
        if let Some(id) = request_id {
            r.request_ids.push(id.to_string());
        }
    });
}

/// Who the calls being collected are made for (`None` outside [`collect`]).
pub fn caller() -> Option<String> {
    COLLECTING.try_with(|c| c.caller.clone()).ok()
}

/// `caller` in the characters AWS takes, at most `max` of them: letters and digits kept,
/// every character of `extra` kept, anything else `_`. Used for the user agent's app name
/// and for a role session name. Never empty (`anonymous`).
pub fn sanitized(caller: &str, extra: &str, max: usize) -> String {
    let s: String = caller
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || extra.contains(c) { c } else { '_' })
        .take(max)
        .collect();
    if s.is_empty() {
        "anonymous".chars().take(max).collect()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn receipts_stay_with_their_own_change() {
        note(Some("111111111111"), Some("outside"));
        assert_eq!(caller(), None);
        let one = collect("alice", async {
            note(Some("123456789012"), Some("req-1"));
            tokio::task::yield_now().await;
            note(None, Some("req-2"));
            caller()
        });
        let two = collect("bob", async {
            note(Some("210987654321"), Some("req-3"));
            caller()
        });
        let ((c1, r1), (c2, r2)) = tokio::join!(one, two);
        assert_eq!((c1.as_deref(), c2.as_deref()), (Some("alice"), Some("bob")));
        assert_eq!(r1.account.as_deref(), Some("123456789012"));
        assert_eq!(r1.request_ids, ["req-1", "req-2"]);
        assert_eq!(r2.request_ids, ["req-3"]);
    }

    #[test]
    fn callers_are_sanitized_within_limits() {
        assert_eq!(sanitized("alice@example.com", "=,.@-", 64), "alice@example.com");
        assert_eq!(sanitized("alice@example.com", "-._", 64), "alice_example.com");
        assert_eq!(sanitized("a b/c\nd", "-", 64), "a_b_c_d");
        assert_eq!(sanitized(&"x".repeat(100), "", 10).len(), 10);
        assert_eq!(sanitized("é", "", 10), "_");
        assert_eq!(sanitized("", "", 5), "anony");
    }
}
