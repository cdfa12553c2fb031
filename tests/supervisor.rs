//! The pre-fork supervisor, proved with the real binary, real processes and real signals.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{event, http, int, sup_event, Load, Service, PATIENCE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn every_worker_becomes_ready_and_answers_health() {
    let svc = Service::start("workers = 3\n");
    let ready: HashSet<i64> =
        svc.logs.all().iter().filter(|v| sup_event(v, "worker_ready")).map(|v| int(v, "pid")).collect();
    assert_eq!(ready.len(), 3, "{}", svc.logs.dump());
    let status =
        svc.notes.all().iter().filter_map(|v| v.as_str().map(str::to_owned)).collect::<Vec<_>>().join("\n");
    assert!(status.contains("READY=1") && status.contains("3 of 3 workers serving"), "{status}");

    // The kernel hands queued connections to whichever worker accepts first; concurrent
    // clients keep several workers busy at once, so every one of them answers soon.
    let seen = std::sync::Mutex::new(HashSet::new());
    let deadline = Instant::now() + PATIENCE;
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                while seen.lock().unwrap().len() < 3 && Instant::now() < deadline {
                    let h = svc.health();
                    assert_eq!(h["status"], "ok");
                    assert_eq!(h["generation"], 1);
                    seen.lock().unwrap().insert(h["pid"].as_i64().unwrap());
                }
            });
        }
    });
    assert_eq!(*seen.lock().unwrap(), ready, "pids answering /health must be the ready workers");
}

#[test]
fn recycling_reloads_and_scaling_under_load_fail_no_request() {
    let config = |keepalive: f64| {
        format!("workers = 2\nmax_requests = 50\nmax_requests_jitter = 30\ngraceful_timeout = 10\ntimeout = 10\nkeepalive = {keepalive}\n")
    };
    let svc = Service::start(&config(2.0));
    let load = Load::start(&svc.addr, 2, 2);

    for i in 0..10 {
        load.wait_for(150);
        // A real change each time, so every reload rolls onto a different configuration.
        svc.rewrite_config(&config(2.0 + (i + 1) as f64 / 10.0));
        let from = svc.notes.len();
        svc.signal(Signal::SIGHUP);
        let reloading = svc.wait_note(from, "RELOADING=1");
        svc.wait_note(reloading + 1, "READY=1");
    }
    for _ in 0..3 {
        load.wait_for(150);
        let from = svc.logs.len();
        svc.signal(Signal::SIGTTIN);
        svc.logs.wait(from, "worker 3 ready", |v| sup_event(v, "worker_ready") && int(v, "worker") == 3);
        let from = svc.logs.len();
        load.wait_for(150);
        svc.signal(Signal::SIGTTOU);
        svc.logs.wait(from, "scale-down exit", |v| {
            sup_event(v, "worker_exited") && v["reason"] == "scale_down" && int(v, "worker") == 3
        });
    }
    // Keep the load on until recycling has happened often enough to see the jitter, with no
    // signal around it as well.
    let mut from = 0;
    for _ in 0..15 {
        let (at, _) = svc.logs.wait(from, "a recycle", |v| sup_event(v, "worker_recycle"));
        from = at + 1;
    }
    svc.logs.wait(from, "a recycled worker's exit", |v| {
        sup_event(v, "worker_exited") && v["reason"] == "recycle"
    });
    let result = load.finish();

    assert!(
        result.failures.is_empty(),
        "{} failed of {}: {:?}",
        result.failures.len(),
        result.ok,
        &result.failures[..result.failures.len().min(10)]
    );
    let logs = svc.logs.all();
    let budgets: Vec<i64> =
        logs.iter().filter(|v| sup_event(v, "worker_spawned")).map(|v| int(v, "max_requests")).collect();
    assert!(budgets.iter().all(|b| (50..=80).contains(b)), "budgets outside 50..=80: {budgets:?}");
    let recycled_at: Vec<i64> =
        logs.iter().filter(|v| sup_event(v, "worker_recycle")).map(|v| int(v, "requests")).collect();
    let distinct: BTreeSet<i64> = recycled_at.iter().copied().collect();
    // With a jitter of 30, the recycle points must actually spread, not cluster on one value.
    assert!(recycled_at.len() >= 3, "too few recycles: {recycled_at:?}");
    assert!(distinct.len() * 2 >= recycled_at.len().min(20), "recycle points do not spread: {recycled_at:?}");
    assert!(distinct.last().unwrap() - distinct.first().unwrap() >= 10, "spread too narrow: {distinct:?}");
    assert!(result.ok > 2000, "load too light to prove anything: {}", result.ok);
    svc.wait_only_generation(11);
    assert_eq!(svc.health()["generation"], 11);
    let reloads = logs.iter().filter(|v| sup_event(v, "reload_complete")).count();
    assert_eq!(reloads, 10);
    eprintln!("{} requests, 0 failed; {} recycles at {:?}", result.ok, recycled_at.len(), distinct);
}

#[test]
fn killed_worker_is_replaced_and_service_keeps_answering() {
    let svc = Service::start("workers = 2\n");
    let (slot, victim) = svc.live_workers()[0];
    let load = Load::start(&svc.addr, 2, 0);
    std::thread::sleep(Duration::from_millis(300)); // let the load reach the victim
    let from = svc.logs.len();
    kill(victim, Signal::SIGKILL).unwrap();
    let (_, exited) = svc.logs.wait(from, "victim's exit", |v| {
        sup_event(v, "worker_exited") && int(v, "pid") == victim.as_raw() as i64
    });
    assert_eq!(exited["reason"], "crash");
    assert_eq!(exited["status"], "killed by SIGKILL");
    assert!(exited["message"].as_str().unwrap().contains("out of memory?"), "{exited}");
    svc.logs.wait(from, "replacement", |v| sup_event(v, "worker_ready") && int(v, "worker") == slot);
    let during = load.finish();
    // Two client threads: at most the two requests in flight on the killed worker may fail.
    assert!(during.failures.len() <= 2, "{:?}", during.failures);
    for _ in 0..200 {
        assert_eq!(svc.health()["status"], "ok");
    }
}

#[test]
fn silent_worker_is_aborted_and_replaced() {
    let svc = Service::start("workers = 2\ntimeout = 1.5\n");
    let (slot, victim) = svc.live_workers()[0];
    let from = svc.logs.len();
    // A stopped process sends no heartbeat: exactly what a worker stuck in a blocking call is.
    kill(victim, Signal::SIGSTOP).unwrap();
    let started = Instant::now();
    let (_, timeout) = svc.logs.wait(from, "timeout", |v| sup_event(v, "worker_timeout"));
    assert_eq!(int(&timeout, "pid"), victim.as_raw() as i64);
    let (_, exited) = svc
        .logs
        .wait(from, "exit", |v| sup_event(v, "worker_exited") && int(v, "pid") == victim.as_raw() as i64);
    assert_eq!(exited["reason"], "timeout");
    // SIGABRT stays pending on a stopped process, so SIGKILL has to follow.
    assert_eq!(exited["status"], "killed by SIGKILL");
    assert!(!exited["message"].as_str().unwrap().contains("out of memory"), "we sent that SIGKILL: {exited}");
    svc.logs.wait(from, "replacement", |v| sup_event(v, "worker_ready") && int(v, "worker") == slot);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(svc.health()["status"], "ok");
}

#[test]
fn bad_config_on_hup_is_rejected_and_the_old_one_keeps_serving() {
    let mut svc = Service::start("workers = 2\n");
    let before: BTreeSet<i64> = svc.live_workers().iter().map(|(_, p)| p.as_raw() as i64).collect();
    for bad in ["workers = 0\n", "wokers = 2\n", "workers = [\n", "bind = \"nowhere\"\n"] {
        svc.rewrite_config(bad);
        let (from, notes) = (svc.logs.len(), svc.notes.len());
        svc.signal(Signal::SIGHUP);
        let (_, rejected) = svc.logs.wait(from, "reload_rejected", |v| sup_event(v, "reload_rejected"));
        assert!(!rejected["reason"].as_str().unwrap().is_empty());
        let reloading = svc.wait_note(notes, "RELOADING=1");
        svc.wait_note(reloading + 1, "READY=1");
        let h = svc.health();
        assert_eq!(h["generation"], 1, "after {bad:?}");
        assert!(before.contains(&h["pid"].as_i64().unwrap()));
    }
    assert!(!svc.logs.all().iter().any(|v| sup_event(v, "worker_exited")), "no worker may have been touched");
    let text = svc.logs.dump();
    assert!(text.contains("workers = 0: must be between 1 and 1024"), "the reason must name key and value");

    svc.rewrite_config("workers = 2\n");
    let from = svc.logs.len();
    svc.signal(Signal::SIGHUP);
    svc.logs.wait(from, "reload_complete", |v| sup_event(v, "reload_complete"));
    svc.wait_only_generation(2);
    assert_eq!(svc.health()["generation"], 2);
    svc.signal(Signal::SIGTERM);
    assert!(svc.wait_exit(PATIENCE).unwrap().success());
}

#[test]
fn workers_that_cannot_boot_make_the_supervisor_exit_with_a_clear_message() {
    if !common::is_root() {
        common::skip("needs root to make workers (running as nobody) unable to open their log file");
        return;
    }
    // The supervisor (root) can open the log file; workers, dropped to `nobody`, cannot: a
    // config that passes every check and still cannot boot a single worker.
    let locked = tempfile::tempdir().unwrap();
    let log = locked.path().join("service.log");
    let mut svc = Service::start_with(common::Options {
        config: format!(
            "workers = 2\nuser = \"nobody\"\n[log]\nformat = \"json\"\nfile = \"{}\"\n",
            log.display()
        ),
        env: vec![],
        wait_ready: false,
    });
    let started = Instant::now();
    let status = svc.wait_exit(PATIENCE).expect("supervisor must give up, not retry forever");
    assert_eq!(status.code(), Some(3), "{}", svc.logs.dump());
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let stderr = svc.logs.dump();
    assert!(stderr.contains("workers failed to boot"), "{stderr}");
    assert!(stderr.contains("cannot open log file"), "the worker must say why: {stderr}");
    let file = std::fs::read_to_string(&log).unwrap();
    assert!(file.contains("\"event\":\"halt\""), "{file}");
    let spawned = file.lines().filter(|l| l.contains("\"event\":\"worker_spawned\"")).count();
    assert!(spawned <= 6, "no fork bomb: {spawned} spawns");
}

#[test]
fn reload_whose_workers_cannot_boot_keeps_the_old_workers() {
    if !common::is_root() {
        common::skip("needs root to drop workers to nobody");
        return;
    }
    let locked = tempfile::tempdir().unwrap();
    let svc = Service::start("workers = 2\n");
    let before: BTreeSet<i64> = svc.live_workers().iter().map(|(_, p)| p.as_raw() as i64).collect();
    // Valid for the supervisor, fatal for every worker: they cannot open the log file as nobody.
    svc.rewrite_config(&format!(
        "workers = 2\nuser = \"nobody\"\n[log]\nformat = \"json\"\nfile = \"{}\"\n",
        locked.path().join("x.log").display()
    ));
    let from = svc.logs.len();
    svc.signal(Signal::SIGHUP);
    svc.logs
        .wait(from, "worker complaint", |v| v["raw"].as_str().unwrap_or("").contains("cannot open log file"));
    let (_, failed) = svc.logs.wait(from, "reload_failed", |v| sup_event(v, "reload_failed"));
    assert_eq!(int(&failed, "restored_generation"), 1);
    for _ in 0..20 {
        let h = svc.health();
        assert_eq!(h["generation"], 1);
        assert!(before.contains(&h["pid"].as_i64().unwrap()));
    }
}

/// Sends one complete request on `s` and returns the response; the connection stays open.
fn keepalive_request(s: &mut TcpStream) -> http::Response {
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    http::read_response(s).unwrap()
}

#[test]
fn term_lets_requests_in_flight_finish_then_exits_zero() {
    let mut svc = Service::start("workers = 1\ngraceful_timeout = 8\nkeepalive = 20\n");
    let mut conn = TcpStream::connect(&svc.addr).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let first = keepalive_request(&mut conn);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), None, "kept alive before the stop");
    // Half a request: the worker has it, the client is still sending.
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n").unwrap();
    let from = svc.logs.len();
    let term_at = Instant::now();
    svc.signal(Signal::SIGTERM);
    svc.logs.wait(from, "worker draining", |v| event(v) == "draining");
    assert!(http::get(&svc.addr, "/health").is_err(), "no new connections once stopping");
    conn.write_all(b"\r\n").unwrap();
    let second = http::read_response(&mut conn).unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(second.header("connection"), Some("close"));
    assert_eq!(second.json()["status"], "draining");
    let status = svc.wait_exit(PATIENCE).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(term_at.elapsed() < Duration::from_secs(8), "exit took {:?}", term_at.elapsed());
    assert!(svc.notes.dump().contains("STOPPING=1"));
}

#[test]
fn int_exits_fast_even_with_requests_in_flight() {
    let mut svc = Service::start("workers = 2\ngraceful_timeout = 20\nkeepalive = 20\n");
    let mut conn = TcpStream::connect(&svc.addr).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(keepalive_request(&mut conn).status, 200);
    conn.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let int_at = Instant::now();
    svc.signal(Signal::SIGINT);
    let status = svc.wait_exit(PATIENCE).unwrap();
    assert!(int_at.elapsed() < Duration::from_secs(3), "took {:?}", int_at.elapsed());
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the unfinished request gets no answer");
}

#[test]
fn sd_notify_tells_ready_reloading_and_stopping() {
    let mut svc = Service::start("workers = 2\n");
    let ready = svc.wait_note(0, "READY=1");
    svc.signal(Signal::SIGHUP);
    let reloading = svc.wait_note(ready + 1, "RELOADING=1");
    let note = svc.notes.all()[reloading].as_str().unwrap().to_string();
    let usec: u64 = note
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC")
        .parse()
        .unwrap();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_usec = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    assert!(usec <= now_usec && now_usec - usec < 60_000_000, "MONOTONIC_USEC {usec} vs now {now_usec}");
    let again = svc.wait_note(reloading + 1, "READY=1");
    assert!(svc.notes.all()[again].as_str().unwrap().contains("generation 2"));
    svc.signal(Signal::SIGTERM);
    svc.wait_note(again + 1, "STOPPING=1");
    assert!(svc.wait_exit(PATIENCE).unwrap().success());
}

#[test]
fn queued_connections_survive_a_worker_exit() {
    let svc = Service::start("workers = 1\ntimeout = 60\n");
    let (_, only) = svc.live_workers()[0];
    kill(only, Signal::SIGSTOP).unwrap();
    // No worker accepts now: the kernel completes the handshake and queues the connection in
    // the supervisor's listener.
    let mut queued = TcpStream::connect(&svc.addr).unwrap();
    queued.set_read_timeout(Some(PATIENCE)).unwrap();
    queued.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let from = svc.logs.len();
    kill(only, Signal::SIGKILL).unwrap();
    let (_, ready) = svc.logs.wait(from, "replacement", |v| sup_event(v, "worker_ready"));
    let r = http::read_response(&mut queued).expect("the queued connection is served, not reset");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["pid"].as_i64(), Some(int(&ready, "pid")));
}

#[test]
fn ttou_never_goes_below_one_worker() {
    // Debug level: the supervisor then logs `worker_stopping` the moment it decides to stop a
    // worker, not only its exit, which may come much later.
    let mut svc = Service::start("workers = 1\n[log]\nformat = \"json\"\nlevel = \"debug\"\n");
    let [(_, first)] = svc.live_workers()[..] else { panic!("one worker: {:?}", svc.live_workers()) };
    let from = svc.logs.len();
    svc.signal(Signal::SIGTTOU);
    svc.logs.wait(from, "ttou ignored", |v| sup_event(v, "scale") && int(v, "workers") == 1);
    // The supervisor handles signals in order: TTIN after TTOU. Had TTOU lowered the target
    // to 0, TTIN would bring it to 1; it says 2, so the target never went below one, and the
    // one worker gets a companion instead of a replacement.
    let from = svc.logs.len();
    svc.signal(Signal::SIGTTIN);
    let (_, scale) = svc.logs.wait(from, "ttin", |v| sup_event(v, "scale"));
    assert_eq!(int(&scale, "workers"), 2, "{scale}");
    svc.logs.wait(from, "the second worker ready", |v| sup_event(v, "worker_ready"));
    assert_eq!(svc.health()["status"], "ok");
    // Then the whole life of the service, through its shutdown: the first worker was never
    // told to stop nor exited before the TERM, and every exit is the shutdown's.
    let term = svc.logs.len();
    svc.signal(Signal::SIGTERM);
    assert!(svc.wait_exit(PATIENCE).expect("stops on TERM").success(), "{}", svc.logs.dump());
    svc.logs.wait(0, "stopped", |v| sup_event(v, "stopped"));
    let lines = svc.logs.all();
    let stops = |name: &str| -> Vec<(usize, i64, String)> {
        lines
            .iter()
            .enumerate()
            .filter(|(_, v)| sup_event(v, name))
            .map(|(i, v)| (i, int(v, "pid"), v["reason"].as_str().unwrap_or("").to_string()))
            .collect()
    };
    let (stopping, exited) = (stops("worker_stopping"), stops("worker_exited"));
    assert!(
        stopping.iter().chain(&exited).all(|(i, _, _)| *i >= term),
        "a worker stopped before the TERM:\n{}",
        svc.logs.dump()
    );
    assert!(exited.iter().all(|(_, _, reason)| reason == "shutdown"), "{exited:?}");
    assert!(exited.iter().any(|(_, pid, _)| *pid == first.as_raw() as i64), "{exited:?}");
    assert_eq!(exited.len(), 2, "{exited:?}");
    // The debug lines are there (one per worker, for the shutdown): their absence before the
    // TERM means something.
    assert_eq!(stopping.len(), 2, "{stopping:?}");
    assert_eq!(lines.iter().filter(|v| sup_event(v, "worker_spawned")).count(), 2, "no worker was replaced");
}

/// A service whose log pipe the test can stop draining: while it is full, the supervisor's main
/// loop blocks in its next log write, exactly like a loop busy with anything else (spawning a
/// worker, reading a config), yet its signal handlers still run.
struct Throttled {
    svc: Service,
    valve: Arc<(Mutex<Valve>, Condvar)>,
    /// A second, non-blocking open of the log pipe, for the test to fill it.
    filler: std::fs::File,
}

#[derive(Default)]
struct Valve {
    closed: bool,
    /// The relay is waiting on the valve, not inside a read.
    parked: bool,
}

impl Throttled {
    fn start(config: &str) -> Throttled {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, common::full_config(config, dir.path())).unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        // The service writes to `tight` (one page: easy to fill); a relay copies it to `relayed`,
        // which the harness reads as the service's stderr.
        let (tight_read, tight_write) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(&tight_write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
        let (relayed_read, relayed_write) = nix::unistd::pipe().unwrap();
        let filler = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", tight_write.as_raw_fd()))
            .unwrap();
        let mut child = std::process::Command::new(common::BIN)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(tight_write))
            .process_group(0)
            .spawn()
            .unwrap();
        child.stderr = Some(std::process::ChildStderr::from(relayed_read));
        let valve = Arc::new((Mutex::new(Valve::default()), Condvar::new()));
        let relay = valve.clone();
        std::thread::spawn(move || {
            let (mut from, mut to) = (std::fs::File::from(tight_read), std::fs::File::from(relayed_write));
            let mut buf = [0u8; 4096];
            loop {
                {
                    let (lock, cv) = &*relay;
                    let mut v = lock.lock().unwrap();
                    while v.closed {
                        v.parked = true;
                        cv.notify_all();
                        v = cv.wait(v).unwrap();
                    }
                    v.parked = false;
                }
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let svc = Service::attach(child, dir, path, notify, true);
        Throttled { svc, valve, filler }
    }

    /// Stops relaying and fills the log pipe: the next log line anyone writes blocks.
    fn choke(&mut self) {
        let (lock, cv) = &*self.valve;
        lock.lock().unwrap().closed = true;
        // The relay may be inside a read: it takes what the first fill brings, then parks.
        let fill = |f: &mut std::fs::File| while f.write(b"\n").is_ok() {};
        fill(&mut self.filler);
        let mut v = lock.lock().unwrap();
        while !v.parked {
            v = cv.wait(v).unwrap();
        }
        drop(v);
        fill(&mut self.filler);
    }

    /// Relays again; whoever was blocked on a log write goes on.
    fn release(&self) {
        let (lock, cv) = &*self.valve;
        lock.lock().unwrap().closed = false;
        cv.notify_all();
    }

    /// Sends `sig` `times` times while the supervisor's main loop is busy: the first signal
    /// makes it log (and block on the choked pipe), the others arrive while it is blocked.
    ///
    /// Each `kill` waits until the previous signal has left the supervisor's pending set (its
    /// handler has it): the kernel keeps at most one pending instance of a standard signal, so
    /// two `kill`s before the process takes the first are merged by the kernel, and no program
    /// can count what it never receives. What this proves is that every signal the handler
    /// receives counts, however many arrive during one turn of the loop.
    fn burst_while_busy(&mut self, sig: Signal, times: usize) {
        self.choke();
        let pid = self.svc.pid();
        let deadline = Instant::now() + PATIENCE;
        for i in 0..times {
            self.svc.signal(sig);
            while pending(pid, sig) {
                assert!(Instant::now() < deadline, "{sig} stays pending in the supervisor");
                std::thread::yield_now();
            }
            if i == 0 {
                while !blocked_writing(pid) {
                    assert!(Instant::now() < deadline, "the supervisor never blocked on its log");
                    std::thread::yield_now();
                }
            }
        }
        // A signal interrupts the blocked write for its handler, and the write is restarted:
        // for that instant the thread is not in `pipe_write`, so the check waits it out.
        while !blocked_writing(pid) {
            assert!(Instant::now() < deadline, "the main loop stayed busy during the burst");
            std::thread::yield_now();
        }
        self.release();
    }
}

/// Whether `sig` is pending (sent, not yet taken by a handler) in process `pid`.
fn pending(pid: Pid, sig: Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let bit = 1u64 << (sig as i32 - 1);
    status
        .lines()
        .filter_map(|l| l.strip_prefix("ShdPnd:").or_else(|| l.strip_prefix("SigPnd:")))
        .any(|mask| u64::from_str_radix(mask.trim(), 16).unwrap() & bit != 0)
}

/// Whether the main thread of `pid` is blocked writing to a pipe.
fn blocked_writing(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.trim().ends_with("pipe_write"))
}

/// Stops the service with TERM and waits for the supervisor's last log line, so that every line
/// it wrote is in `svc.logs`: what did not happen by then never will.
fn stop_and_collect(svc: &mut Service) -> Vec<serde_json::Value> {
    let from = svc.logs.len();
    svc.signal(Signal::SIGTERM);
    svc.logs.wait(from, "the supervisor's last line", |v| sup_event(v, "stopped"));
    assert!(svc.wait_exit(PATIENCE).unwrap().success());
    svc.logs.all()
}

#[test]
fn every_ttin_of_a_burst_adds_one_worker() {
    let mut t = Throttled::start("workers = 1\n");
    let from = t.svc.logs.len();
    t.burst_while_busy(Signal::SIGTTIN, 3);
    let svc = &mut t.svc;
    for slot in 2..=4 {
        svc.logs.wait(from, &format!("worker {slot} ready"), |v| {
            sup_event(v, "worker_ready") && int(v, "worker") == slot
        });
    }
    assert_eq!(svc.health()["status"], "ok");
    let logs = stop_and_collect(svc);
    let after = &logs[from..];
    let targets: Vec<i64> =
        after.iter().filter(|v| sup_event(v, "scale")).map(|v| int(v, "workers")).collect();
    assert_eq!(targets, [2, 3, 4], "one scale step per TTIN");
    let spawned: BTreeSet<i64> =
        after.iter().filter(|v| sup_event(v, "worker_spawned")).map(|v| int(v, "worker")).collect();
    assert_eq!(spawned, BTreeSet::from([2, 3, 4]), "exactly three workers more");
    let ready: BTreeSet<i64> =
        after.iter().filter(|v| sup_event(v, "worker_ready")).map(|v| int(v, "worker")).collect();
    assert_eq!(ready, BTreeSet::from([2, 3, 4]));
}

#[test]
fn every_ttou_of_a_burst_removes_one_worker() {
    let mut t = Throttled::start("workers = 4\n");
    let from = t.svc.logs.len();
    t.burst_while_busy(Signal::SIGTTOU, 3);
    let svc = &mut t.svc;
    for slot in 2..=4 {
        svc.logs.wait(from, &format!("worker {slot} scaled down"), |v| {
            sup_event(v, "worker_exited") && v["reason"] == "scale_down" && int(v, "worker") == slot
        });
    }
    assert_eq!(svc.health()["status"], "ok");
    let logs = stop_and_collect(svc);
    let after = &logs[from..];
    let targets: Vec<i64> =
        after.iter().filter(|v| sup_event(v, "scale")).map(|v| int(v, "workers")).collect();
    assert_eq!(targets, [3, 2, 1], "one scale step per TTOU");
    let exits: Vec<(i64, String)> = after
        .iter()
        .filter(|v| sup_event(v, "worker_exited"))
        .map(|v| (int(v, "worker"), v["reason"].as_str().unwrap_or("").to_string()))
        .collect();
    let scaled: BTreeSet<i64> = exits.iter().filter(|(_, r)| r == "scale_down").map(|(w, _)| *w).collect();
    assert_eq!(scaled, BTreeSet::from([2, 3, 4]), "exactly three workers fewer: {exits:?}");
    assert!(exits.contains(&(1, "shutdown".to_string())), "worker 1 served until the stop: {exits:?}");
    assert!(!after.iter().any(|v| sup_event(v, "worker_spawned")), "nothing replaced: {exits:?}");
}

#[test]
fn listens_on_ipv6_and_unix_sockets_too() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let svc = Service::start(&format!("workers = 1\nbind = [\"[::1]:0\", \"unix:{}\"]\n", sock.display()));
    assert!(svc.addr.starts_with("[::1]:"), "{}", svc.addr);
    assert_eq!(svc.health()["status"], "ok");
    let r = http::get_unix(&sock, "/health").unwrap();
    assert_eq!(r.status, 200);
    drop(svc);
}

#[test]
fn workers_drop_to_the_configured_user() {
    if !common::is_root() {
        common::skip("needs root to drop workers to nobody");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    // The state directory must be nobody's: the workers refuse one another user could write.
    let state = tempfile::tempdir().unwrap();
    nix::unistd::chown(state.path(), Some(nobody), None).unwrap();
    let svc = Service::start(&format!(
        "workers = 1\nuser = \"nobody\"\n[whitelist]\nstate_dir = \"{}\"\n",
        state.path().display()
    ));
    let nobody = nobody.as_raw();
    let (_, worker) = svc.live_workers()[0];
    assert_eq!(common::uid_of(worker), Some(nobody));
    assert_eq!(common::uid_of(svc.pid()), Some(0), "the supervisor keeps root to bind on reload");
    assert_eq!(svc.health()["status"], "ok");
}

#[test]
fn pidfile_is_written_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("a.pid");
    let mut svc = Service::start(&format!("workers = 1\npidfile = \"{}\"\n", pidfile.display()));
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), svc.pid().to_string());
    svc.signal(Signal::SIGTERM);
    assert!(svc.wait_exit(PATIENCE).unwrap().success());
    assert!(!pidfile.exists());
}

#[test]
fn adopts_sockets_passed_by_systemd() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // If the supervisor bound this instead of adopting, it would fail: the directory is missing.
    std::fs::write(
        &config,
        common::full_config("workers = 1\nbind = \"unix:/nonexistent/dir/x.sock\"\n", dir.path()),
    )
    .unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = std::process::Command::new("/bin/sh");
    // LISTEN_PID must be the pid of the process that reads it: the shell's, which exec keeps.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --config \"$1\"")
        .arg(common::BIN)
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe calls
    // (fcntl, dup2).
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec; clear it explicitly in that case.
            let rc =
                if fd == 3 { nix::libc::fcntl(3, nix::libc::F_SETFD, 0) } else { nix::libc::dup2(fd, 3) };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(listener);
    let svc = Service::attach(child, dir, config, notify, true);
    assert_eq!(svc.addr, addr);
    let listening = svc.logs.all().into_iter().find(|v| sup_event(v, "listening")).unwrap();
    assert_eq!(listening["systemd"], true);
    assert_eq!(svc.health()["status"], "ok");
}

#[test]
fn usr1_reopens_log_files_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("service.log");
    let sock = dir.path().join("s.sock");
    let svc = Service::start_with(common::Options {
        config: format!(
            "workers = 2\nbind = \"unix:{}\"\n[log]\nformat = \"json\"\nfile = \"{}\"\n",
            sock.display(),
            log.display()
        ),
        env: vec![],
        wait_ready: false,
    });
    svc.wait_note(0, "READY=1");
    let rotated = dir.path().join("service.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let notes = svc.notes.len();
    svc.signal(Signal::SIGUSR1);
    // Three processes reopen: wait for each to say so in the new file.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let reopened = text.lines().filter(|l| l.contains("\"event\":\"logs_reopened\"")).count();
        if reopened == 3 {
            assert!(
                text.contains("\"name\":\"supervisor\"") && text.contains("\"name\":\"worker\""),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{reopened} of 3 reopened; new file:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("\"event\":\"ready\""), "lines before the rotation stay in the old file");
    assert!(!old.contains("logs_reopened"), "nothing after the reopen goes to the old file:\n{old}");
    assert_eq!(http::get_unix(&sock, "/health").unwrap().status, 200);
    assert!(
        !svc.notes.all()[notes..].iter().any(|n| n.as_str().unwrap().contains("RELOADING")),
        "USR1 is not a reload"
    );
}
