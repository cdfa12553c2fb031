//! `awswhitelist ctl` against the real service: what it reports matches the processes `/proc`
//! shows, its actions do what the signals do, other users are refused (by the socket's mode and,
//! on their own, by the peer-uid check), and every process says what it is in its title.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{event, http, int, sup_event, Options, Service, BIN, PATIENCE};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Runs `awswhitelist ctl <args>` as the test's user.
fn ctl(args: &[&str]) -> Output {
    ctl_as(Path::new(BIN), args, None)
}

/// Runs `<binary> ctl <args>`, as `uid`/`gid` when given.
fn ctl_as(binary: &Path, args: &[&str], user: Option<(u32, u32)>) -> Output {
    let mut cmd = Command::new(binary);
    cmd.arg("ctl").args(args).stdin(Stdio::null()).current_dir("/");
    // `ctl` reads the config like `serve`: no stray AWSWHITELIST_* from the test's environment.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWSWHITELIST_") {
            cmd.env_remove(k);
        }
    }
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.output().unwrap()
}

/// `ctl <command> --json` through `socket`: the supervisor's answer, required to be `ok`.
fn ask(socket: &Path, command: &str) -> Value {
    let out = ctl(&["--socket", socket.to_str().unwrap(), command, "--json"]);
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ctl {command}: {e}\n{}", describe(&out)));
    assert!(out.status.success() && answer["ok"] == true, "ctl {command}:\n{}", describe(&out));
    answer
}

fn describe(out: &Output) -> String {
    format!(
        "exit: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Processes whose parent is `pid`, from /proc.
fn children_of(pid: i64) -> BTreeSet<i64> {
    let mut children = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i64>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The command name is in parentheses and may contain spaces: parse after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        if rest.split_whitespace().nth(1).and_then(|p| p.parse::<i64>().ok()) == Some(pid) {
            children.insert(child);
        }
    }
    children
}

/// What `ps -o args` shows: `/proc/<pid>/cmdline`, its NUL-separated words joined by spaces.
fn title_of(pid: i64) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    words.join(" ")
}

fn comm_of(pid: i64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim_end().to_string()
}

/// Worker pids in a status answer.
fn worker_pids(status: &Value) -> BTreeSet<i64> {
    status["workers"].as_array().unwrap().iter().map(|w| w["pid"].as_i64().unwrap()).collect()
}

/// A directory any user may enter (the socket's own mode is then what keeps others out).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Starts the service with its control socket at `<dir>/ctl.sock`.
fn start(dir: &Path, config: &str) -> (Service, PathBuf) {
    let socket = dir.join("ctl.sock");
    let svc = Service::start(&format!("control_socket = \"{}\"\n{config}", socket.display()));
    (svc, socket)
}

#[test]
fn status_matches_the_processes_and_titles_say_what_each_is() {
    // Under systemd the socket goes to $RUNTIME_DIRECTORY unless control_socket says otherwise.
    let runtime = open_dir();
    let mut opts = Options::new("workers = 2\n");
    opts.env.push(("RUNTIME_DIRECTORY".into(), runtime.path().display().to_string()));
    let svc = Service::start_with(opts);
    let socket = runtime.path().join("control.sock");
    let mode = std::fs::symlink_metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    let status = ask(&socket, "status")["status"].clone();
    let sup = svc.pid().as_raw() as i64;
    assert_eq!(status["pid"], sup, "{status}");
    assert_eq!(status["name"], "awswhitelist");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["generation"], 1);
    assert_eq!(status["phase"], "running");
    assert_eq!((status["target"].as_i64(), status["serving"].as_i64()), (Some(2), Some(2)));
    assert!(status["uptime_secs"].as_f64().unwrap() > 0.0);
    assert_eq!(worker_pids(&status), children_of(sup), "the workers are the supervisor's children: {status}");
    let mut slots = BTreeSet::new();
    for w in status["workers"].as_array().unwrap() {
        assert_eq!(w["state"], "ready", "{w}");
        assert_eq!(w["generation"], 1);
        assert!(w["rss_bytes"].as_u64().unwrap() > 1 << 20, "{w}");
        assert!(w["last_heartbeat_secs"].as_f64().unwrap() < 30.0, "{w}");
        assert!(w["age_secs"].as_f64().unwrap() <= status["uptime_secs"].as_f64().unwrap());
        let (pid, slot) = (w["pid"].as_i64().unwrap(), w["slot"].as_i64().unwrap());
        slots.insert(slot);
        assert_eq!(title_of(pid), format!("awswhitelist: worker {slot} gen 1"));
        assert_eq!(comm_of(pid), "awswl-worker");
    }
    assert_eq!(slots, BTreeSet::from([1, 2]));
    assert_eq!(title_of(sup), "awswhitelist: supervisor gen 1");
    assert_eq!(comm_of(sup), "awswhitelist");

    // `workers` is the per-worker part; the human table names every worker.
    let workers = ask(&socket, "workers");
    assert!(workers.get("status").is_none(), "{workers}");
    assert_eq!(worker_pids(&workers), worker_pids(&status), "{workers}");
    let table = ctl(&["--socket", socket.to_str().unwrap(), "status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success() && text.contains(&format!("supervisor pid {sup}")), "{text}");
    for pid in worker_pids(&status) {
        assert!(text.contains(&pid.to_string()), "{text}");
    }
    drop(svc);
}

#[test]
fn add_worker_three_times_adds_three_and_remove_worker_removes_one() {
    let dir = open_dir();
    let (svc, socket) = start(dir.path(), "workers = 1\n");
    let sup = svc.pid().as_raw() as i64;
    let before = worker_pids(&ask(&socket, "status")["status"]);
    let from = svc.logs.len();
    // Three at once, each its own connection.
    let asks: Vec<_> = (0..3)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || ask(&socket, "add-worker"))
        })
        .collect();
    let mut targets: Vec<i64> =
        asks.into_iter().map(|a| a.join().unwrap()["accepted"]["target"].as_i64().unwrap()).collect();
    targets.sort();
    assert_eq!(targets, [2, 3, 4], "each add-worker adds one");
    let mut seen = from;
    for n in 0..3 {
        let (i, _) = svc.logs.wait(seen, &format!("new worker {n} ready"), |v| sup_event(v, "worker_ready"));
        seen = i + 1;
    }
    let status = ask(&socket, "status")["status"].clone();
    assert_eq!(status["target"], 4, "{status}");
    assert_eq!(status["serving"], 4, "{status}");
    let pids = worker_pids(&status);
    assert_eq!(pids, children_of(sup));
    assert_eq!(pids.difference(&before).count(), 3, "three new live workers: {status}");

    let from = svc.logs.len();
    let removed = ask(&socket, "remove-worker");
    assert_eq!(removed["accepted"]["target"], 3, "{removed}");
    let (_, exit) = svc
        .logs
        .wait(from, "a worker scaled down", |v| sup_event(v, "worker_exited") && v["reason"] == "scale_down");
    let status = ask(&socket, "status")["status"].clone();
    assert_eq!((status["target"].as_i64(), status["serving"].as_i64()), (Some(3), Some(3)), "{status}");
    assert!(!worker_pids(&status).contains(&int(&exit, "pid")));
    assert_eq!(worker_pids(&status), children_of(sup));
}

#[test]
fn another_user_is_refused_by_the_socket_mode_and_by_the_peer_check() {
    if !common::is_root() {
        common::skip("needs root to run ctl as another user (nobody)");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a nobody user");
    let user = Some((nobody.uid.as_raw(), nobody.gid.as_raw()));
    // A copy of the binary that nobody may run, in a directory nobody may enter.
    let bin_dir = open_dir();
    let binary = bin_dir.path().join("awswhitelist");
    std::fs::copy(BIN, &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = open_dir();
    let (mut svc, socket) = start(dir.path(), "workers = 1\n");
    let path = socket.to_str().unwrap();

    // The file's mode keeps nobody out.
    let out = ctl_as(&binary, &["--socket", path, "stop"], user);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied") && err.contains(path), "{err}");

    // With the mode opened up, the peer's uid alone refuses it: answered, logged, nothing done.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let from = svc.logs.len();
    let out = ctl_as(&binary, &["--socket", path, "stop"], user);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("uid {} may not control this service", nobody.uid)), "{}", describe(&out));
    svc.logs.wait(from, "control_refused", |v| {
        sup_event(v, "control_refused") && v["uid"].as_u64() == Some(nobody.uid.as_raw().into())
    });
    let out = ctl_as(&binary, &["--socket", path, "status", "--json"], user);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(answer.get("status").is_none(), "nothing is told to a refused peer: {answer}");
    assert!(svc.wait_exit(std::time::Duration::from_millis(200)).is_none(), "the refused stop stopped it");
    assert_eq!(ask(&socket, "status")["status"]["phase"], "running");
}

#[test]
fn a_silent_or_endless_client_holds_up_nothing() {
    let dir = open_dir();
    let (svc, socket) = start(dir.path(), "workers = 1\n");
    // One client that connects and says nothing, one that never finishes its line.
    let _silent = UnixStream::connect(&socket).unwrap();
    let mut endless = UnixStream::connect(&socket).unwrap();
    endless.write_all(br#"{"v":1,"command":"sta"#).unwrap();
    let from = svc.logs.len();
    svc.signal(Signal::SIGTTIN);
    svc.logs.wait(from, "TTIN handled", |v| sup_event(v, "scale") && int(v, "workers") == 2);
    assert_eq!(ask(&socket, "status")["status"]["target"], 2, "other clients are answered meanwhile");
    // An oversized request is refused at the limit, not buffered.
    let mut big = UnixStream::connect(&socket).unwrap();
    big.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = big.write_all(&vec![b' '; 64 * 1024]);
    let mut answer = String::new();
    let _ = BufReader::new(&big).read_line(&mut answer);
    assert!(answer.contains("longer than 4096 bytes"), "{answer:?}");
}

#[test]
fn reload_rolls_a_new_generation_and_stop_exits_cleanly() {
    let dir = open_dir();
    let (mut svc, socket) = start(dir.path(), "workers = 2\n");
    let sup = svc.pid().as_raw() as i64;
    let cfg = svc.config.to_str().unwrap().to_string();
    let old = worker_pids(&ask(&socket, "status")["status"]);
    let from = svc.logs.len();
    // Found through the same configuration `serve` reads.
    let out = ctl(&["--config", &cfg, "reload"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("generation 2"), "{}", describe(&out));
    svc.logs.wait(from, "reload_complete", |v| sup_event(v, "reload_complete"));
    svc.wait_only_generation(2);
    let status = ask(&socket, "status")["status"].clone();
    assert_eq!(status["generation"], 2);
    let new = worker_pids(&status);
    assert!(new.is_disjoint(&old), "every worker replaced: {old:?} -> {status}");
    assert_eq!(new, children_of(sup));
    assert_eq!(title_of(sup), "awswhitelist: supervisor gen 2");
    for w in status["workers"].as_array().unwrap() {
        assert_eq!(w["generation"], 2);
        assert_eq!(title_of(w["pid"].as_i64().unwrap()), format!("awswhitelist: worker {} gen 2", w["slot"]));
    }

    // A configuration that cannot load is refused, with the reason, and changes nothing.
    std::fs::write(&svc.config, "workers = \"many\"\n").unwrap();
    let out = ctl(&["--socket", socket.to_str().unwrap(), "reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("reload rejected"), "{}", describe(&out));
    assert_eq!(ask(&socket, "status")["status"]["generation"], 2);

    let out = ctl(&["--socket", socket.to_str().unwrap(), "stop"]);
    assert!(out.status.success(), "{}", describe(&out));
    let exit = svc.wait_exit(PATIENCE).expect("the supervisor exits after ctl stop");
    assert!(exit.success(), "{exit:?}");
    assert!(!socket.exists(), "the socket file is removed on exit");
    let out = ctl(&["--socket", socket.to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no control socket"), "{}", describe(&out));
}

#[test]
fn a_draining_worker_says_so_in_its_title_and_status() {
    let dir = open_dir();
    let (svc, socket) = start(dir.path(), "workers = 1\nkeepalive = 30\ngraceful_timeout = 30\n");
    // An idle kept-alive connection holds its worker in the drain until its next request.
    let mut conn = TcpStream::connect(&svc.addr).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let first = http::read_response(&mut conn).unwrap();
    let old = first.json()["pid"].as_i64().unwrap();
    assert_eq!(title_of(old), "awswhitelist: worker 1 gen 1");
    let from = svc.logs.len();
    ask(&socket, "reload");
    svc.logs.wait(from, "the old worker draining", |v| {
        event(v) == "draining" && v.pointer("/span/pid").and_then(Value::as_i64) == Some(old)
    });
    assert_eq!(title_of(old), "awswhitelist: worker 1 gen 1 (draining)");
    let status = ask(&socket, "status")["status"].clone();
    let entry = status["workers"].as_array().unwrap().iter().find(|w| w["pid"] == old).cloned();
    let entry = entry.unwrap_or_else(|| panic!("the draining worker is listed: {status}"));
    assert_eq!(
        (entry["state"].as_str(), entry["stopping"].as_str()),
        (Some("draining"), Some("reload")),
        "{entry}"
    );
    // Its next request is answered and closes the connection; then it is gone.
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(http::read_response(&mut conn).unwrap().header("connection"), Some("close"));
    svc.logs.wait(from, "the old worker exited", |v| sup_event(v, "worker_exited") && int(v, "pid") == old);
}

/// Kills a whole process group when dropped: the new supervisor of an upgrade is not the
/// test's child, so a failed test must not leave it running.
struct Group(Pid);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}

#[test]
fn upgrade_hands_the_control_socket_to_the_new_supervisor() {
    let bin_dir = open_dir();
    let binary = bin_dir.path().join("awswhitelist");
    std::fs::copy(BIN, &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = bin_dir.path().join("ctl.sock");
    let config = format!("workers = 1\ntimeout = 10\ncontrol_socket = \"{}\"\n", socket.display());
    let mut svc = Service::start_program(&binary, Options::new(&config));
    let _group = Group(svc.pid());
    let old = svc.pid().as_raw() as i64;
    let from = svc.logs.len();
    let answer = ask(&socket, "upgrade");
    let (_, started) = svc.logs.wait(from, "upgrade_started", |v| sup_event(v, "upgrade_started"));
    let new = int(&started, "new_pid");
    let message = answer["accepted"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("pid {new}")), "{answer}");
    svc.logs.wait(from, "upgrade_handover", |v| sup_event(v, "upgrade_handover"));
    let exit = svc.wait_exit(PATIENCE).expect("the old supervisor exits after the handover");
    assert!(exit.success(), "{exit:?}");

    // The old supervisor left the socket to the new one, which answers on it.
    let status = ask(&socket, "status")["status"].clone();
    assert_eq!(status["pid"], new, "{status}");
    assert_eq!(worker_pids(&status), children_of(new));
    assert_eq!(title_of(new), "awswhitelist: supervisor gen 1");
    assert_ne!(new, old);
    let from = svc.logs.len();
    ask(&socket, "stop");
    svc.logs.wait(from, "the new supervisor stopped", |v| {
        sup_event(v, "stopped") && v.pointer("/span/pid").and_then(Value::as_i64) == Some(new)
    });
    assert!(!socket.exists(), "the new supervisor removes its socket on exit");
}
