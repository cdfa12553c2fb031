//! The rate limiter across real processes: children of this test binary (re-run with `--exact
//! hammer_child --ignored` and an environment variable naming their role) each map the same table and
//! hammer the same client key at once; together they get exactly the burst.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use worker::ratelimit::{Decision, Limits, Options, RateLimiter};

#[path = "../../tests/common/skip.rs"]
mod skip;

const ROLE: &str = "RATELIMIT_TEST_CHILD_TABLE";
const GO: &str = "RATELIMIT_TEST_CHILD_GO";
const KEY: &str = "RATELIMIT_TEST_CHILD_KEY";
const OWN_KEY: &str = "RATELIMIT_TEST_CHILD_OWN_KEY";
const REQUESTS: &str = "RATELIMIT_TEST_CHILD_REQUESTS";
const RATE: &str = "RATELIMIT_TEST_CHILD_RATE";
const BURST: &str = "RATELIMIT_TEST_CHILD_BURST";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

/// The child's role. Not a test of its own: ignored in an ordinary run (and counted as such, not
/// as a pass), run by the tests below in their children.
#[test]
#[ignore = "the child process of the other tests here, which start it"]
fn hammer_child() {
    let Ok(table) = std::env::var(ROLE) else {
        skip::skip("runs only as a child of the other tests here (with their role in the environment)");
        return;
    };
    let limits = Limits { rate_per_minute: env(RATE).parse().unwrap(), burst: env(BURST).parse().unwrap() };
    let requests: usize = env(REQUESTS).parse().unwrap();
    let (key, own_key, go) = (env(KEY), env(OWN_KEY), env(GO));
    let limiter = RateLimiter::open(&table, limits).unwrap();
    println!("READY");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(&go).exists() {
        assert!(Instant::now() < deadline, "no go signal");
        std::thread::sleep(Duration::from_micros(200));
    }
    let (mut shared, mut own) = (0, 0);
    for _ in 0..requests {
        shared += usize::from(limiter.check(&key).is_allowed());
        // Interleaved: a key of this child only, living in the same table at the same time.
        own += usize::from(limiter.check(&own_key).is_allowed());
    }
    println!("ALLOWED {shared} {own}");
}

struct Run {
    /// Requests allowed on the shared key, per child.
    shared: Vec<usize>,
    /// Requests allowed on each child's own key.
    own: Vec<usize>,
    /// From the go signal to the last child's exit.
    elapsed: Duration,
}

/// The children of one run, killed and waited for when dropped: a failed assertion in the
/// parent never leaves one waiting for its go file.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `children` children, each sending `requests` on the shared key and as many on its own.
fn run(table: &Path, limits: Limits, children: usize, requests: usize) -> Run {
    let go = table.with_extension("go");
    let exe = std::env::current_exe().unwrap();
    let mut spawned = Children(Vec::new());
    let mut outputs: Vec<BufReader<ChildStdout>> = Vec::new();
    for i in 0..children {
        let mut child = Command::new(&exe)
            .args(["--exact", "hammer_child", "--ignored", "--nocapture", "--test-threads", "1", "-q"])
            .env(ROLE, table)
            .env(GO, &go)
            .env(KEY, "client-shared")
            .env(OWN_KEY, format!("client-own-{i}"))
            .env(REQUESTS, requests.to_string())
            .env(RATE, limits.rate_per_minute.to_string())
            .env(BURST, limits.burst.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        outputs.push(BufReader::new(child.stdout.take().unwrap()));
        spawned.0.push(child);
    }
    for out in &mut outputs {
        wait_for(out, "READY");
    }
    let started = Instant::now();
    std::fs::write(&go, b"").unwrap();
    let mut shared = Vec::new();
    let mut own = Vec::new();
    for (child, out) in spawned.0.iter_mut().zip(&mut outputs) {
        let line = wait_for(out, "ALLOWED ");
        let mut counts = line.split_whitespace().skip(1).map(|n| n.parse::<usize>().unwrap());
        shared.push(counts.next().unwrap());
        own.push(counts.next().unwrap());
        assert!(child.wait().unwrap().success());
    }
    Run { shared, own, elapsed: started.elapsed() }
}

/// Reads lines until one starts with `prefix`; returns it.
fn wait_for(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited before printing {prefix:?}");
        if let Some(pos) = line.find(prefix) {
            return line[pos..].trim().to_string();
        }
    }
}

#[test]
fn processes_share_exactly_one_burst() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("requests.rl");
    // Refill during the test: nil (a token every few weeks).
    let limits = Limits { rate_per_minute: 1e-6, burst: 2000 };
    // A one-stripe table, so every check of every child and key contends for the same lock.
    let parent = RateLimiter::open_with(&table, limits, Options { slots: 64, ..Options::default() }).unwrap();
    let (children, requests) = (4, 1000);
    let run = run(&table, limits, children, requests);
    let total: usize = run.shared.iter().sum();
    eprintln!("allowed per child: {:?} in {:?}", run.shared, run.elapsed);
    assert_eq!(total, 2000, "per child: {:?}", run.shared);
    // Each child's own key: a bucket of its own, unaffected by the others.
    assert_eq!(run.own, vec![1000; children]);
    assert!(matches!(parent.check("client-shared"), Decision::Limited { .. }));
    // 1000 of client-own-0's 2000 tokens are spent.
    assert_eq!(parent.check("client-own-0"), Decision::Allowed { remaining: 999 });
    assert_eq!(parent.check("client-other"), Decision::Allowed { remaining: 1999 });
    assert_eq!(parent.forced_evictions(), 0);
}

#[test]
fn refill_across_processes_is_bounded_by_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("requests.rl");
    // A token every 50 ms, 20 at once.
    let limits = Limits { rate_per_minute: 1200.0, burst: 20 };
    let started = Instant::now();
    let run = run(&table, limits, 3, 20_000);
    let window = started.elapsed().max(run.elapsed);
    let total: usize = run.shared.iter().sum();
    let refilled = (window.as_millis() / 50) as usize;
    assert!(total >= 20, "at least the burst: {total}");
    assert!(
        total <= 20 + refilled + 1,
        "{total} allowed in {window:?}: more than burst + {refilled} refilled"
    );
}

const HOLD_TABLE: &str = "RATELIMIT_TEST_HOLDER_TABLE";
const ANSWER_TABLE: &str = "RATELIMIT_TEST_ANSWER_TABLE";
/// The client key every process of the lock tests checks.
const LOCK_KEY: &str = "client-locked";
/// A burst nobody can refill during a test.
const NO_REFILL: Limits = Limits { rate_per_minute: 1e-6, burst: 10 };

/// The holder's role: takes the stripe lock, says so, and stalls inside the critical section
/// until it is killed. A no-op in an ordinary test run.
#[test]
fn holder_child() {
    let Ok(table) = std::env::var(HOLD_TABLE) else {
        return;
    };
    let limiter = RateLimiter::open(&table, NO_REFILL).unwrap();
    limiter.check_inside(LOCK_KEY, || {
        use std::io::Write;
        println!("HOLDING");
        std::io::stdout().flush().unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
}

/// An answering worker's role: one check of the locked key per stdin line, its outcome printed.
/// A no-op in an ordinary test run.
#[test]
fn answer_child() {
    let Ok(table) = std::env::var(ANSWER_TABLE) else {
        return;
    };
    let limiter = RateLimiter::open(&table, NO_REFILL).unwrap();
    println!("READY");
    for line in std::io::stdin().lines() {
        if line.unwrap().trim().is_empty() {
            continue;
        }
        match limiter.check(LOCK_KEY) {
            Decision::Allowed { remaining } => println!("ANSWER allowed {remaining}"),
            Decision::Limited { .. } => println!("ANSWER limited"),
        }
    }
}

/// A child of this test binary in one of the roles above, its stdout lines on a channel (so a
/// silent child is noticed within a deadline); killed and reaped when dropped.
struct Peer {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Peer {
    fn start(test: &str, role: &str, table: &Path) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads", "1", "-q"])
            .env(role, table)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { child, lines }
    }

    /// The next line starting with `prefix` (the test harness prints its own lines too).
    fn expect(&self, prefix: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(pos) = line.find(prefix) {
                return Some(line[pos..].trim().to_string());
            }
        }
    }

    fn ask(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"check\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_worker_killed_holding_the_lock_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("requests.rl");
    // One stripe: every process meets on the same lock.
    let parent =
        RateLimiter::open_with(&table, NO_REFILL, Options { slots: 64, ..Options::default() }).unwrap();
    let holder = Peer::start("holder_child", HOLD_TABLE, &table);
    let mut answerers: Vec<Peer> =
        (0..3).map(|_| Peer::start("answer_child", ANSWER_TABLE, &table)).collect();
    for a in &answerers {
        assert!(a.expect("READY", Duration::from_secs(30)).is_some(), "an answerer did not start");
    }
    assert!(holder.expect("HOLDING", Duration::from_secs(30)).is_some(), "the holder never took the lock");
    // Killed inside the critical section, and not reaped (a zombie, as while a busy supervisor
    // has not got to its SIGCHLD yet): its pid still exists.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(holder.child.id() as i32), nix::sys::signal::SIGKILL)
        .unwrap();
    let mut answers = Vec::new();
    for (i, a) in answerers.iter_mut().enumerate() {
        a.ask();
        let answer = a.expect("ANSWER", Duration::from_secs(1));
        assert!(answer.is_some(), "answerer {i} hung after the lock holder was killed");
        answers.extend(answer);
    }
    // The holder died after claiming a fresh slot, before charging it: the bucket is whole, and
    // every answer after that is exact.
    assert_eq!(answers, ["ANSWER allowed 9", "ANSWER allowed 8", "ANSWER allowed 7"]);
    assert_eq!(parent.check(LOCK_KEY), Decision::Allowed { remaining: 6 });
    drop(holder);
}

#[test]
fn a_lock_word_naming_a_live_unrelated_process_does_not_hang() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("requests.rl");
    let limiter = std::sync::Arc::new(
        RateLimiter::open_with(&table, NO_REFILL, Options { slots: 64, ..Options::default() }).unwrap(),
    );
    let file = std::fs::OpenOptions::new().write(true).open(&table).unwrap();
    // The first word of the only stripe, after the 4096-byte header: what a lock left by a dead
    // worker whose pid now belongs to a live process (init, or this test) looks like.
    for (round, pid) in [1u32, std::process::id()].into_iter().enumerate() {
        file.write_at(&pid.to_ne_bytes(), 4096).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let limiter = limiter.clone();
        std::thread::spawn(move || {
            let _ = tx.send(limiter.check(LOCK_KEY));
        });
        let decision = rx.recv_timeout(Duration::from_secs(1));
        assert_eq!(
            decision,
            Ok(Decision::Allowed { remaining: 9 - round as u32 }),
            "a check hung on a lock word naming live pid {pid}"
        );
    }
}
