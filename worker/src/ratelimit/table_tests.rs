use std::time::Duration;

use super::*;
use crate::ratelimit::ManualClock;

const MINUTE: Duration = Duration::from_secs(60);

fn limiter(
    dir: &tempfile::TempDir,
    name: &str,
    limits: Limits,
    slots: usize,
) -> (RateLimiter, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1000)));
    let options = Options { slots, clock: clock.clone() };
    (RateLimiter::open_with(dir.path().join(name), limits, options).unwrap(), clock)
}

fn allowed(remaining: u32) -> Decision {
    Decision::Allowed { remaining }
}

fn limited(ms: u64) -> Decision {
    Decision::Limited { retry_after: Duration::from_millis(ms) }
}

#[test]
fn burst_then_refill() {
    let dir = tempfile::tempdir().unwrap();
    // One token a second, three at once.
    let (rl, clock) = limiter(&dir, "t", Limits { rate_per_minute: 60.0, burst: 3 }, 64);
    assert_eq!(rl.check("a"), allowed(2));
    assert_eq!(rl.check("a"), allowed(1));
    assert_eq!(rl.check("a"), allowed(0));
    assert_eq!(rl.check("a"), limited(1000));
    assert_eq!(rl.check("a"), limited(1000), "a refusal costs nothing");
    clock.advance(Duration::from_millis(400));
    assert_eq!(rl.check("a"), limited(600));
    clock.advance(Duration::from_millis(600));
    assert_eq!(rl.check("a"), allowed(0));
    assert_eq!(rl.check("a"), limited(1000));
    clock.advance(Duration::from_millis(2500));
    assert_eq!(rl.check("a"), allowed(1), "2.5 tokens back, one spent: 1.5 left");
    clock.advance(MINUTE);
    assert_eq!(rl.check("a"), allowed(2), "never more than the burst");
}

#[test]
fn check_n_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (rl, clock) = limiter(&dir, "t", Limits { rate_per_minute: 60.0, burst: 5 }, 64);
    assert!(!rl.check_n("a", 6).is_allowed(), "more than the burst never passes");
    assert_eq!(rl.check_n("a", 3), allowed(2), "…and took nothing");
    assert_eq!(rl.check_n("a", 3), limited(1000), "two left: three refused whole");
    assert_eq!(rl.check_n("a", 2), allowed(0), "the refusal took nothing either");
    clock.advance(Duration::from_secs(2));
    assert_eq!(rl.check_n("a", 2), allowed(0));
}

#[test]
fn peek_says_what_check_would_and_charges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (rl, _clock) = limiter(&dir, "t", Limits { rate_per_minute: 1.0, burst: 2 }, 64);
    assert_eq!(rl.peek("a"), allowed(1), "an unknown key has a full bucket");
    assert_eq!(rl.peek("a"), allowed(1), "peeking took nothing");
    assert_eq!(rl.check("a"), allowed(1));
    assert_eq!(rl.peek("a"), allowed(0));
    assert_eq!(rl.check("a"), allowed(0));
    assert_eq!(rl.peek("a"), limited(60_000));
    assert_eq!(rl.peek("b"), allowed(1), "other keys unaffected");
}

#[test]
fn keys_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let (rl, _clock) = limiter(&dir, "t", Limits { rate_per_minute: 1.0, burst: 2 }, 64);
    assert!(rl.check("a").is_allowed());
    assert!(rl.check("a").is_allowed());
    assert!(!rl.check("a").is_allowed());
    assert_eq!(rl.check("b"), allowed(1));
    assert_eq!(rl.check("a"), limited(60_000));
}

#[test]
fn fractional_rate_and_exact_count() {
    let dir = tempfile::tempdir().unwrap();
    // 0.5 per minute: one token every two minutes.
    let (rl, clock) = limiter(&dir, "t", Limits { rate_per_minute: 0.5, burst: 10 }, 64);
    let n = (0..100).filter(|_| rl.check("k").is_allowed()).count();
    assert_eq!(n, 10);
    clock.advance(Duration::from_secs(119));
    assert!(!rl.check("k").is_allowed());
    clock.advance(Duration::from_secs(1));
    assert_eq!(rl.check("k"), allowed(0));
}

#[test]
fn two_mappings_share_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Duration::from_secs(5)));
    let limits = Limits { rate_per_minute: 1.0, burst: 4 };
    let open = || {
        let options = Options { slots: 128, clock: clock.clone() };
        RateLimiter::open_with(dir.path().join("t"), limits, options).unwrap()
    };
    let (a, b) = (open(), open());
    assert_eq!(a.check("x"), allowed(3));
    assert_eq!(b.check("x"), allowed(2));
    assert_eq!(a.check("x"), allowed(1));
    assert_eq!(b.check("x"), allowed(0));
    assert!(!a.check("x").is_allowed());
    assert!(!b.check("x").is_allowed());
    assert_eq!(a.salt, b.salt);
    assert_eq!(b.capacity(), 128);
}

#[test]
fn threads_sharing_one_limiter_get_exactly_the_burst() {
    let dir = tempfile::tempdir().unwrap();
    let (rl, _clock) = limiter(&dir, "t", Limits { rate_per_minute: 1e-9, burst: 500 }, 64);
    let rl = Arc::new(rl);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let rl = rl.clone();
            std::thread::spawn(move || (0..400).filter(|_| rl.check("hot").is_allowed()).count())
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 500);
    assert_eq!(rl.check("cold"), allowed(499));
}

#[test]
fn existing_table_keeps_its_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { rate_per_minute: 10.0, burst: 1 };
    let path = dir.path().join("t");
    let small = RateLimiter::open_with(&path, limits, Options { slots: 64, ..Options::default() }).unwrap();
    let big =
        RateLimiter::open_with(&path, limits, Options { slots: 1 << 16, ..Options::default() }).unwrap();
    assert_eq!(small.capacity(), 64);
    assert_eq!(big.capacity(), 64);
    assert!(big.check("k").is_allowed());
    assert!(!small.check("k").is_allowed());
    // And the other way round: a smaller request adopts the bigger table.
    let path2 = dir.path().join("t2");
    let big = RateLimiter::open_with(&path2, limits, Options { slots: 4096, ..Options::default() }).unwrap();
    let small = RateLimiter::open_with(&path2, limits, Options { slots: 64, ..Options::default() }).unwrap();
    assert_eq!((big.capacity(), small.capacity()), (4096, 4096));
    assert_eq!(RateLimiter::open(dir.path().join("t3"), limits).unwrap().capacity(), DEFAULT_SLOTS);
}

#[test]
fn refuses_foreign_files_and_bad_limits() {
    let dir = tempfile::tempdir().unwrap();
    let ok = Limits { rate_per_minute: 1.0, burst: 1 };
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, b"hello, world, this is not a table").unwrap();
    let err = RateLimiter::open(&foreign, ok).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(std::fs::read(&foreign).unwrap(), b"hello, world, this is not a table", "left untouched");
    let short = dir.path().join("short");
    std::fs::write(&short, b"abc").unwrap();
    assert_eq!(RateLimiter::open(&short, ok).unwrap_err().kind(), io::ErrorKind::InvalidData);
    for bad in [
        Limits { rate_per_minute: 0.0, burst: 1 },
        Limits { rate_per_minute: -1.0, burst: 1 },
        Limits { rate_per_minute: f64::NAN, burst: 1 },
        Limits { rate_per_minute: f64::INFINITY, burst: 1 },
        Limits { rate_per_minute: 1.0, burst: 0 },
    ] {
        let err = RateLimiter::open(dir.path().join("x"), bad).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn full_buckets_are_reused_without_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let (rl, clock) = limiter(&dir, "t", Limits { rate_per_minute: 60.0, burst: 2 }, 64);
    for round in 0..4 {
        for i in 0..64 {
            assert_eq!(rl.check(&format!("round{round}-k{i}")), allowed(1));
        }
        // 1 s later every bucket is full again: all 64 slots are reusable.
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(rl.forced_evictions(), 0);
    // While they are not, a 65th client has to evict one.
    for i in 0..65 {
        assert_eq!(rl.check(&format!("last-k{i}")), allowed(1));
    }
    assert_eq!(rl.forced_evictions(), 1);
}

#[test]
fn a_full_stripe_evicts_the_most_refilled_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (rl, clock) = limiter(&dir, "t", Limits { rate_per_minute: 1.0, burst: 2 }, 64);
    // 64 clients, each one token down (a minute to refill), each 100 ms after the previous:
    // "k0" is the most refilled, "k63" the least, none is full.
    for i in 0..64 {
        assert_eq!(rl.check(&format!("k{i}")), allowed(1));
        clock.advance(Duration::from_millis(100));
    }
    assert_eq!(rl.forced_evictions(), 0);
    assert_eq!(rl.check("newcomer"), allowed(1));
    assert_eq!(rl.forced_evictions(), 1);
    // "k63" kept its bucket (one token down, a minute to wait after the next one).
    assert_eq!(rl.check("k63"), allowed(0));
    assert!(!rl.check("k63").is_allowed());
    // "k0" was evicted: a fresh bucket, which is more than it had (and evicts "k1").
    assert_eq!(rl.check("k0"), allowed(1));
    assert_eq!(rl.forced_evictions(), 2);
}

#[test]
fn impossible_state_counts_as_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let (rl, clock) = limiter(&dir, "t", Limits { rate_per_minute: 60.0, burst: 3 }, 64);
    assert_eq!(rl.check("k"), allowed(2));
    // Pretend the file comes from a boot whose clock was far ahead.
    let stripe = (rl.hash("k") as usize) & (rl.stripes - 1);
    let (_, tat) = rl.find_or_claim(stripe, rl.hash("k"), clock.now_ns());
    tat.store(clock.now_ns() + 3_600_000_000_000, Ordering::Relaxed);
    assert_eq!(rl.check("k"), allowed(2));
}

#[test]
fn tiny_rates_do_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let (rl, clock) = limiter(&dir, "t", Limits { rate_per_minute: 1e-300, burst: u32::MAX }, 64);
    assert_eq!(rl.check("k"), allowed(u32::MAX - 1));
    clock.advance(Duration::from_secs(u32::MAX as u64));
    assert!(rl.check("k").is_allowed());
    let (rl, clock) = limiter(&dir, "u", Limits { rate_per_minute: 1e300, burst: 1 }, 64);
    assert_eq!((rl.interval_ns, rl.window_ns), (1, 1));
    assert_eq!(rl.check("k"), allowed(0));
    assert_eq!(rl.check("k"), Decision::Limited { retry_after: Duration::from_nanos(1) });
    clock.advance(Duration::from_nanos(1));
    assert_eq!(rl.check("k"), allowed(0));
}

#[test]
fn retry_after_seconds_round_up() {
    assert_eq!(allowed(3).retry_after_secs(), None);
    assert_eq!(limited(1).retry_after_secs(), Some(1));
    assert_eq!(limited(1000).retry_after_secs(), Some(1));
    assert_eq!(limited(1001).retry_after_secs(), Some(2));
    assert_eq!(Decision::Limited { retry_after: Duration::ZERO }.retry_after_secs(), Some(1));
}

#[test]
fn a_stripe_locked_through_another_open_of_the_file_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let (rl, _clock) = limiter(&dir, "t", Limits { rate_per_minute: 60.0, burst: 3 }, 64);
    let rl = Arc::new(rl);
    // Another open file description: what another worker's open of the table is.
    let other = crate::host::state_file::open(&dir.path().join("t")).unwrap();
    let offset = lock_offset(rl.stripe_of("k"));
    ofd_lock(&other, offset, nix::libc::F_WRLCK as i16).unwrap();
    let waiter = {
        let rl = rl.clone();
        std::thread::spawn(move || rl.check("k"))
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "a stripe locked elsewhere must be waited for");
    // Closing the other open releases its lock, as a holder's death does.
    drop(other);
    assert_eq!(waiter.join().unwrap(), allowed(2));
}
