//! History against the in-memory journal of `service_tests` (read back through the real line
//! format): filters, newest first, pages, and only the groups the caller may touch.

use super::*;
use crate::whitelist::HistoryQuery;

const G2: &str = "sg-0123456789abcdef1";

fn on(g: &str, ip: &str) -> AddArgs {
    AddArgs {
        rule: RuleArgs { group: g.into(), ip_address: ip.into(), ..RuleArgs::default() },
        user: Some("carol".into()),
        ..AddArgs::default()
    }
}

#[tokio::test]
async fn history_filters_pages_newest_first_and_hides_other_groups() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let alice = Caller { identity: Some("alice".into()), ..Caller::default() };
    let bob = Caller { identity: Some("bob".into()), ..Caller::default() };
    w.add(&scope(), &on(G, "203.0.113.7"), &alice).await.unwrap();
    w.add(&scope(), &on(G2, "203.0.113.7"), &alice).await.unwrap();
    w.add(&scope(), &AddArgs { duration: Some("1h".into()), ..add("198.51.100.1", None, None) }, &bob)
        .await
        .unwrap();
    w.add(&scope(), &AddArgs { duration: Some("3h".into()), ..add("198.51.100.1", None, None) }, &bob)
        .await
        .unwrap();
    w.remove(&scope(), &rule("203.0.113.7", None, None), &alice).await.unwrap();

    let all = w.history(&HistoryQuery { outcome: None, ..HistoryQuery::default() }, &alice).await.unwrap();
    let seen: Vec<(&str, &str, String)> =
        all.entries.iter().map(|e| (e.action.as_str(), e.result.as_str(), e.identity.clone())).collect();
    assert_eq!(seen.len(), 10, "intent and outcome of five changes: {seen:?}");
    assert_eq!(seen[0], ("remove", "removed", "alice".to_string()), "newest first");
    assert_eq!(seen[9], ("add", "pending", "alice".to_string()));

    let outcomes = |q: HistoryQuery| {
        let w = &w;
        let alice = alice.clone();
        async move {
            w.history(&q, &alice)
                .await
                .unwrap()
                .entries
                .into_iter()
                .map(|e| (e.action, e.group_id))
                .collect::<Vec<_>>()
        }
    };
    let q = |f: fn(&mut HistoryQuery)| {
        let mut q = HistoryQuery { outcome: Some("added".into()), ..HistoryQuery::default() };
        f(&mut q);
        q
    };
    assert_eq!(outcomes(q(|q| q.caller = Some("bob".into()))).await, [("add".to_string(), G.to_string())]);
    assert_eq!(outcomes(q(|q| q.group = Some(G2.into()))).await, [("add".to_string(), G2.to_string())]);
    assert_eq!(outcomes(q(|q| q.ip_address = Some("203.0.113.0/24".into()))).await.len(), 2);
    assert_eq!(outcomes(q(|q| q.user = Some("Carol".into()))).await.len(), 2, "named in the description");
    assert_eq!(
        outcomes(q(|q| q.outcome = Some("renewed".into()))).await,
        [("renew".to_string(), G.to_string())]
    );
    assert!(outcomes(q(|q| q.since = Some("2999-01-01T00:00:00Z".into()))).await.is_empty());
    assert_eq!(outcomes(q(|q| q.until = Some("2999-01-01T00:00:00Z".into()))).await.len(), 3);

    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = w
            .history(
                &HistoryQuery { limit: Some(3), cursor: cursor.clone(), ..HistoryQuery::default() },
                &alice,
            )
            .await
            .unwrap();
        pages.extend(page.entries);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, all.entries, "pages of 3 give the same entries, none twice");

    let narrow = Caller { security_groups: Some(vec![G2.into()].into()), ..alice.clone() };
    let only = w.history(&HistoryQuery::default(), &narrow).await.unwrap();
    assert!(only.entries.iter().all(|e| e.group_id == G2) && only.entries.len() == 2, "{only:?}");
    let err = w
        .history(&HistoryQuery { group: Some(G.into()), ..HistoryQuery::default() }, &narrow)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Policy(_)), "{err}");
    let err = w
        .history(&HistoryQuery { since: Some("yesterday".into()), ..HistoryQuery::default() }, &alice)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { field: "since", .. }), "{err}");
    let err = w
        .history(&HistoryQuery { cursor: Some("nope".into()), ..HistoryQuery::default() }, &alice)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { field: "cursor", .. }), "{err}");
}
