//! The sweeper's fence against the in-memory EC2 of `service_tests`: a fence that says no stops
//! the sweep before anything is recorded or revoked (a sweeper that lost the fleet's lease), and
//! a rule another sweeper removed between this one's read and its revoke (two hosts sweeping
//! while Redis is down) is recorded as `not_present`, with nothing reported removed.

use futures_util::future::BoxFuture;

use super::*;

/// Refuses, or lets "another sweeper" remove every rule just before the revoke.
struct OtherSweeper {
    ec2: Arc<FakeEc2>,
    lease_lost: bool,
}

impl SweepFence for OtherSweeper {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.lease_lost {
                return Err("the fleet's sweeper lease was lost".into());
            }
            self.ec2.rules.lock().unwrap().clear();
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_lost_lease_stops_before_the_revoke_and_a_rule_already_removed_is_not_present() {
    let s = Setup::new();
    let w = s.service(Policy::default());
    let lasting = AddArgs { duration: Some("1h".into()), ..add("1.2.3.4", None, None) };
    w.add(&scope(), &lasting, &Caller::default()).await.unwrap();
    let later = SystemTime::now() + Duration::from_secs(2 * 3600);
    let recorded = s.journal.entries.lock().unwrap().len();

    let lost = OtherSweeper { ec2: s.ec2.clone(), lease_lost: true };
    let stopped = w.sweep_fenced(&scope(), G, later, &lost).await;
    assert!(matches!(stopped, Err(Error::Unavailable(ref m)) if m.contains("lease")), "{stopped:?}");
    assert_eq!(s.journal.entries.lock().unwrap().len(), recorded, "nothing recorded");
    assert_eq!(s.ec2.rules.lock().unwrap().len(), 1, "nothing revoked");

    let raced = OtherSweeper { ec2: s.ec2.clone(), lease_lost: false };
    assert!(w.sweep_fenced(&scope(), G, later, &raced).await.unwrap().is_empty());
    let last = s.journal.outcomes().last().cloned().unwrap();
    assert_eq!((last.action, last.result), ("expire", "not_present"));
}
