//! The lease's timing, checked without Redis: a model of the three scripts (the key's value and
//! expiry, the fencing counter) on simulated time, and candidates whose calls take random
//! times to reach the server and to come back, with random pauses. Whatever the delays, a
//! candidate that believes it may act ([`deadline`] ahead) is the one the server says holds
//! the lease: two sweepers never both act.

use proptest::prelude::*;

use super::*;

/// The server side of the scripts, on simulated milliseconds.
#[derive(Default)]
struct Server {
    /// Holder index and fence, and when the key expires.
    lease: Option<(usize, u64, u64)>,
    fence: u64,
}

impl Server {
    fn expire(&mut self, now: u64) {
        if self.lease.is_some_and(|(_, _, at)| at <= now) {
            self.lease = None;
        }
    }

    /// ACQUIRE or RENEW, as the scripts do them, arriving at `now`.
    fn call(&mut self, who: usize, held: Option<u64>, now: u64, ttl: u64) -> Option<u64> {
        self.expire(now);
        match held {
            Some(fence)
                if self.lease.is_some_and(|(w, f, _)| w == who && f == fence) && self.fence == fence =>
            {
                self.lease = Some((who, fence, now + ttl));
                Some(fence)
            }
            Some(_) => None,
            None if self.lease.is_some() => None,
            None => {
                self.fence += 1;
                self.lease = Some((who, self.fence, now + ttl));
                Some(self.fence)
            }
        }
    }

    fn holder(&mut self, now: u64) -> Option<usize> {
        self.expire(now);
        self.lease.map(|(w, _, _)| w)
    }
}

/// One call: who, when it is sent (ms after the previous one), how long to the server and back.
fn calls() -> impl Strategy<Value = Vec<(usize, u64, u64, u64)>> {
    prop::collection::vec((0usize..3, 0u64..4_000, 0u64..3_000, 0u64..3_000), 1..60)
}

/// What happens to one call, in time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Sent,
    Reached,
    Answered,
}

proptest! {
    #[test]
    fn a_candidate_acts_only_while_the_server_says_it_holds_the_lease(
        ttl_s in 1u64..20,
        script in calls(),
    ) {
        let ttl = Duration::from_secs(ttl_s);
        let ttl_ms = ttl.as_millis() as u64;
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_millis(ms);
        let mut server = Server::default();
        let mut held: [Option<Held>; 3] = [None; 3];
        // Per call: when sent, the fence it carried, the server's answer.
        let mut sent = vec![0u64; script.len()];
        let mut carried: Vec<Option<u64>> = vec![None; script.len()];
        let mut answers: Vec<Option<u64>> = vec![None; script.len()];
        let mut queue = std::collections::BinaryHeap::new();
        let mut t = 0;
        for (c, (_, gap, _, _)) in script.iter().enumerate() {
            t += gap;
            queue.push(std::cmp::Reverse((t, Event::Sent, c)));
        }
        let check = |server: &mut Server, held: &[Option<Held>; 3], t: u64| {
            for (who, h) in held.iter().enumerate() {
                if h.is_some_and(|h| at(t) < h.until) {
                    assert_eq!(server.holder(t), Some(who), "candidate {who} acts at {t} ms without the lease");
                }
            }
        };
        while let Some(std::cmp::Reverse((t, event, c))) = queue.pop() {
            let (who, _, to_server, back) = script[c];
            check(&mut server, &held, t);
            match event {
                Event::Sent => {
                    sent[c] = t;
                    carried[c] = held[who].map(|h| h.fence);
                    queue.push(std::cmp::Reverse((t + to_server, Event::Reached, c)));
                }
                Event::Reached => {
                    answers[c] = server.call(who, carried[c], t, ttl_ms);
                    queue.push(std::cmp::Reverse((t + back, Event::Answered, c)));
                }
                Event::Answered => {
                    held[who] = answers[c].map(|fence| Held { fence, until: deadline(at(sent[c]), ttl) });
                }
            }
            check(&mut server, &held, t);
        }
    }
}

#[test]
fn the_margin_keeps_the_deadline_before_the_servers_expiry() {
    for ttl in [Duration::from_millis(300), Duration::from_secs(1), Duration::from_secs(30)] {
        let m = margin(ttl);
        assert!(m > Duration::ZERO && m <= ttl / 2, "{ttl:?}: {m:?}");
        let sent = Instant::now();
        assert!(deadline(sent, ttl) < sent + ttl);
        assert!(renew_every(ttl) < ttl - m, "renewed before the deadline passes");
    }
}
