//! Binary upgrade on USR2, proved with the real binary, real processes and real signals: the
//! service runs from a copy of the binary that each test replaces before asking for the upgrade.

mod common;

use std::path::{Path, PathBuf};

use common::{int, sup_event, Load, Options, Service, BIN, PATIENCE};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Kills a whole process group when dropped: the new supervisor is not the test's child, so a
/// failed test must not leave it running.
struct Group(Pid);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}

/// Copies the binary under test into `dir` and returns the copy's path.
fn copy_binary(dir: &Path) -> PathBuf {
    let path = dir.join("awswhitelist");
    replace_file(&path, &std::fs::read(BIN).unwrap());
    path
}

/// Replaces the file at `path` the way a package manager does: write beside it, then rename.
fn replace_file(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The parent pid of a process, from /proc.
fn ppid_of(pid: i64) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn alive(pid: i64) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Worker pids the log says the supervisor `sup` spawned.
fn workers_of(logs: &[Value], sup: i64) -> Vec<i64> {
    logs.iter()
        .filter(|v| {
            sup_event(v, "worker_spawned") && v.pointer("/span/pid").and_then(Value::as_i64) == Some(sup)
        })
        .map(|v| int(v, "pid"))
        .collect()
}

fn start(dir: &Path, binary: &Path, extra: &str) -> Service {
    let pidfile = dir.join("awswhitelist.pid");
    let config = format!(
        "workers = 2\ngraceful_timeout = 10\ntimeout = 10\npidfile = \"{}\"\n{extra}",
        pidfile.display()
    );
    Service::start_program(binary, Options::new(&config))
}

#[test]
fn usr2_upgrades_to_the_new_binary_under_load_failing_no_request() {
    let bin_dir = tempfile::tempdir().unwrap();
    let binary = copy_binary(bin_dir.path());
    let mut svc = start(bin_dir.path(), &binary, "");
    let _group = Group(svc.pid());
    let old = svc.pid().as_raw() as i64;
    let load = Load::start(&svc.addr, 2, 2);
    load.wait_for(200);

    // A new file at the same path: the upgrade must run it, not the old inode.
    replace_file(&binary, &std::fs::read(BIN).unwrap());
    let from = svc.logs.len();
    svc.signal(Signal::SIGUSR2);
    let (_, started) = svc.logs.wait(from, "upgrade_started", |v| sup_event(v, "upgrade_started"));
    let new = int(&started, "new_pid");
    assert!(new > 0 && new != old, "{started}");
    svc.logs.wait(from, "the new supervisor's ready", |v| {
        sup_event(v, "ready") && v.pointer("/span/pid").and_then(Value::as_i64) == Some(new)
    });
    svc.logs.wait(from, "upgrade_handover", |v| sup_event(v, "upgrade_handover"));
    load.wait_for(200);
    let status = svc.wait_exit(PATIENCE).expect("the old supervisor exits after the handover");
    assert!(status.success(), "old supervisor: {status:?}");
    load.wait_for(200);
    let result = load.finish();
    result.assert_no_failures();

    let exe = std::fs::read_link(format!("/proc/{new}/exe")).unwrap();
    assert_eq!(exe, binary, "the new supervisor runs the file at the binary's path");
    let logs = svc.logs.all();
    for pid in workers_of(&logs, old) {
        assert!(!alive(pid), "old worker {pid} still alive");
    }
    let health = svc.health();
    let answering = health["pid"].as_i64().unwrap();
    assert_eq!(ppid_of(answering), new, "/health answered by a worker of the new supervisor: {health}");
    let pidfile = bin_dir.path().join("awswhitelist.pid");
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), new.to_string());
    assert!(!pidfile.with_extension("pid.oldbin").exists(), "the old pidfile is gone");

    kill(Pid::from_raw(new as i32), Signal::SIGTERM).unwrap();
    let from = svc.logs.len();
    svc.logs.wait(from, "the new supervisor stopped", |v| sup_event(v, "stopped"));
    eprintln!("{} requests, 0 failed across the upgrade", result.ok);
}

#[test]
fn an_upgrade_that_cannot_boot_keeps_the_old_supervisor_serving() {
    let bin_dir = tempfile::tempdir().unwrap();
    let binary = copy_binary(bin_dir.path());
    let mut svc = start(bin_dir.path(), &binary, "");
    let _group = Group(svc.pid());
    let load = Load::start(&svc.addr, 2, 2);
    load.wait_for(200);

    replace_file(&binary, b"#!/bin/sh\necho 'broken build' >&2\nexit 1\n");
    let from = svc.logs.len();
    svc.signal(Signal::SIGUSR2);
    let (_, failed) = svc.logs.wait(from, "upgrade_failed", |v| sup_event(v, "upgrade_failed"));
    assert!(failed["status"].as_str().unwrap_or("").contains('1'), "the exit status is logged: {failed}");
    load.wait_for(300);
    let result = load.finish();
    result.assert_no_failures();
    assert_eq!(svc.child.try_wait().unwrap(), None, "the old supervisor keeps running");
    let pidfile = bin_dir.path().join("awswhitelist.pid");
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), svc.pid().to_string(), "pidfile restored");
    assert!(!pidfile.with_extension("pid.oldbin").exists());
    let answering = svc.health()["pid"].as_i64().unwrap();
    assert_eq!(ppid_of(answering), svc.pid().as_raw() as i64);

    svc.signal(Signal::SIGTERM);
    assert!(svc.wait_exit(PATIENCE).unwrap().success());
}

#[test]
fn the_new_supervisor_tells_systemd_its_pid_and_ready() {
    let bin_dir = tempfile::tempdir().unwrap();
    let binary = copy_binary(bin_dir.path());
    let mut svc = start(bin_dir.path(), &binary, "");
    let _group = Group(svc.pid());
    let from = svc.logs.len();
    let notes_from = svc.notes.len();
    svc.signal(Signal::SIGUSR2);
    let (_, started) = svc.logs.wait(from, "upgrade_started", |v| sup_event(v, "upgrade_started"));
    let new = int(&started, "new_pid");
    let at = svc.wait_note(notes_from, &format!("MAINPID={new}"));
    let note = svc.notes.all()[at].as_str().unwrap().to_string();
    assert!(note.lines().any(|l| l == "READY=1"), "MAINPID and READY=1 together: {note:?}");
    assert!(svc.wait_exit(PATIENCE).unwrap().success());
    let notes: Vec<String> = svc.notes.all().iter().map(|v| v.as_str().unwrap_or("").to_string()).collect();
    assert!(
        !notes[notes_from..].iter().any(|n| n.contains("STOPPING=1")),
        "a handover is not a stop: {notes:?}"
    );
    kill(Pid::from_raw(new as i32), Signal::SIGTERM).unwrap();
    let from = svc.logs.len();
    svc.logs.wait(from, "the new supervisor stopped", |v| sup_event(v, "stopped"));
}
