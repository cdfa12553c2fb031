//! The control socket: how `ctl` asks a running supervisor for its status and tells it to
//! reload, scale, upgrade or stop — the same handlers its signals run, with an answer.
//!
//! Protocol: one connection, one request, one answer. The request is one line of JSON,
//! `{"v":1,"command":"add-worker"}` (`"fast":true` may follow `"command":"stop"`); the answer is
//! one line of JSON ([`Response`]), then the supervisor closes the connection. `v` is the
//! protocol version: a supervisor refuses a version it does not speak, and a command it does
//! not know, with an error that says which it knows, so an old binary on one side and a new one
//! on the other fail clearly instead of doing something else.
//!
//! Who may connect: the socket file is mode 0600, and the supervisor checks each peer's uid
//! (`SO_PEERCRED`) against its own; root passes too (root can signal the supervisor anyway, and
//! under a `DynamicUser=` unit it is the only operator who can reach the socket).
//!
//! Where things live: this file holds the protocol (requests, answers, their parsing);
//! [`socket`] the supervisor's side (creating the socket safely, accepting, reading and
//! writing without ever blocking); [`client`] the side `ctl` uses.

pub mod client;
pub mod socket;

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// Longest request line, in bytes; a longer one is refused (a request is a few dozen bytes).
pub const MAX_REQUEST: usize = 4096;

/// What `ctl` asks for: one per subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The supervisor and every worker.
    Status,
    /// Only the workers.
    Workers,
    /// What HUP does: re-read the configuration and roll the workers onto it.
    Reload,
    /// What TTIN does: one worker more.
    AddWorker,
    /// What TTOU does: one worker fewer (never none).
    RemoveWorker,
    /// What USR2 does: start the binary at its path again and hand over to it.
    Upgrade,
    /// What TERM does (or INT, with `fast`): stop.
    Stop {
        /// Drain for a second only, then kill (INT/QUIT) instead of `graceful_timeout` (TERM).
        fast: bool,
    },
}

/// Every command name, as requests spell them (and as `ctl` names its subcommands).
pub const COMMANDS: [&str; 7] =
    ["status", "workers", "reload", "add-worker", "remove-worker", "upgrade", "stop"];

impl Command {
    /// The name requests use.
    pub fn name(self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Workers => "workers",
            Command::Reload => "reload",
            Command::AddWorker => "add-worker",
            Command::RemoveWorker => "remove-worker",
            Command::Upgrade => "upgrade",
            Command::Stop { .. } => "stop",
        }
    }

    /// The request line for this command, newline included.
    pub fn to_line(self) -> Vec<u8> {
        let fast = matches!(self, Command::Stop { fast: true });
        let mut line = serde_json::to_vec(&Request { v: VERSION, command: self.name().to_string(), fast })
            .unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// A request as it travels.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    /// Protocol version.
    v: u32,
    /// One of [`COMMANDS`].
    command: String,
    /// Only with `stop`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    fast: bool,
}

/// Reads one request line (without its newline); the error is what the client is told.
pub fn parse_request(line: &[u8]) -> Result<Command, String> {
    // The version first, from a loose reading, so a newer client gets "version 2 is not
    // supported" rather than a complaint about a field this version does not know.
    let loose: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("the request is not JSON: {e}"))?;
    let Some(v) = loose.get("v") else {
        return Err(format!("the request has no protocol version (\"v\"); this supervisor speaks {VERSION}"));
    };
    if v.as_u64() != Some(u64::from(VERSION)) {
        return Err(format!(
            "protocol version {v} is not supported: this supervisor speaks version {VERSION} (use the `ctl` of the same release)"
        ));
    }
    let req: Request = serde_json::from_value(loose).map_err(|e| format!("bad request: {e}"))?;
    let cmd = match req.command.as_str() {
        "status" => Command::Status,
        "workers" => Command::Workers,
        "reload" => Command::Reload,
        "add-worker" => Command::AddWorker,
        "remove-worker" => Command::RemoveWorker,
        "upgrade" => Command::Upgrade,
        "stop" => Command::Stop { fast: req.fast },
        other => {
            return Err(format!("unknown command {other:?}; this supervisor knows: {}", COMMANDS.join(", ")))
        }
    };
    if req.fast && !matches!(cmd, Command::Stop { .. }) {
        return Err(format!("\"fast\" goes with \"stop\" only, not with {:?}", req.command));
    }
    Ok(cmd)
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version of the supervisor.
    pub v: u32,
    /// The request was understood and done (or, for actions, accepted).
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The answer to `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The answer to `workers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<WorkerStatus>>,
    /// The answer to an action: what was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Accepted>,
}

impl Response {
    /// A refusal with its reason.
    pub fn error(reason: impl Into<String>) -> Response {
        Response {
            v: VERSION,
            ok: false,
            error: Some(reason.into()),
            status: None,
            workers: None,
            accepted: None,
        }
    }

    /// A success with nothing in it yet.
    pub fn ok() -> Response {
        Response { v: VERSION, ok: true, error: None, status: None, workers: None, accepted: None }
    }

    /// The answer line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Plain structs of strings and numbers: serialising cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// An action the supervisor accepted: what it will do, and the state it aims for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// In words, for people.
    pub message: String,
    /// How many workers the supervisor keeps from now on.
    pub target: usize,
    /// The configuration generation new workers start with.
    pub generation: u64,
}

/// The supervisor and its workers at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The program (`awswhitelist`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// The supervisor's pid.
    pub pid: u32,
    /// The configuration generation it starts workers with.
    pub generation: u64,
    /// Seconds since the supervisor started.
    pub uptime_secs: f64,
    /// `starting`, `running`, `reloading`, `stopping`, `halting`, or `handed-over` (an upgrade
    /// replaced it and it drains out).
    pub phase: String,
    /// How many workers it keeps.
    pub target: usize,
    /// Workers serving now.
    pub serving: usize,
    /// A new supervisor started by an upgrade that is not ready yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_pid: Option<u32>,
    /// Every live worker process, by slot.
    pub workers: Vec<WorkerStatus>,
}

/// One worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its slot, 1..=target (a successor shares its predecessor's).
    pub slot: u32,
    /// Its pid.
    pub pid: u32,
    /// The configuration generation it runs.
    pub generation: u64,
    /// Booting, ready or draining.
    pub state: WorkerState,
    /// Why it drains (`reload`, `recycle`, `scale_down`, `shutdown`, `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<String>,
    /// Seconds since it was started.
    pub age_secs: f64,
    /// Requests served, as of its last heartbeat.
    pub requests: u64,
    /// Open connections, as of its last heartbeat.
    pub connections: u64,
    /// Resident memory in bytes (`VmRSS`), when `/proc` tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Seconds since it last said anything (a heartbeat, READY, …).
    pub last_heartbeat_secs: f64,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Started, not READY yet.
    Booting,
    /// Serving.
    Ready,
    /// Told to go; finishing its requests.
    Draining,
}

impl WorkerState {
    /// The word tables and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Booting => "booting",
            WorkerState::Ready => "ready",
            WorkerState::Draining => "draining",
        }
    }
}

/// Resident memory of `pid` in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(cmd: Command) -> Vec<u8> {
        let mut l = cmd.to_line();
        assert_eq!(l.pop(), Some(b'\n'));
        l
    }

    #[test]
    fn every_command_round_trips() {
        let all = [
            Command::Status,
            Command::Workers,
            Command::Reload,
            Command::AddWorker,
            Command::RemoveWorker,
            Command::Upgrade,
            Command::Stop { fast: false },
            Command::Stop { fast: true },
        ];
        for cmd in all {
            assert_eq!(parse_request(&line(cmd)), Ok(cmd), "{}", String::from_utf8_lossy(&line(cmd)));
            assert!(COMMANDS.contains(&cmd.name()));
        }
        assert_eq!(line(Command::AddWorker), br#"{"v":1,"command":"add-worker"}"#);
        assert_eq!(line(Command::Stop { fast: true }), br#"{"v":1,"command":"stop","fast":true}"#);
    }

    #[test]
    fn unknown_commands_and_versions_are_refused_by_name() {
        let err = parse_request(br#"{"v":1,"command":"reboot"}"#).unwrap_err();
        assert!(err.contains("unknown command \"reboot\"") && err.contains("add-worker"), "{err}");
        let err = parse_request(br#"{"v":2,"command":"status","new_field":1}"#).unwrap_err();
        assert!(err.contains("protocol version 2 is not supported"), "{err}");
        let err = parse_request(br#"{"command":"status"}"#).unwrap_err();
        assert!(err.contains("no protocol version"), "{err}");
        let err = parse_request(br#"{"v":"1","command":"status"}"#).unwrap_err();
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn malformed_requests_are_refused() {
        for bad in [
            &b""[..],
            b"status",
            b"[1]",
            b"\xff\xfe",
            br#"{"v":1}"#,
            br#"{"v":1,"command":5}"#,
            br#"{"v":1,"command":"status","extra":true}"#,
            br#"{"v":1,"command":"reload","fast":true}"#,
            br#"{"v":1,"command":"stop","fast":"yes"}"#,
        ] {
            assert!(parse_request(bad).is_err(), "{} accepted", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn responses_round_trip() {
        let mut r = Response::ok();
        r.accepted = Some(Accepted { message: "one worker more".into(), target: 3, generation: 2 });
        let mut l = r.to_line();
        assert_eq!(l.pop(), Some(b'\n'));
        assert!(!l.contains(&b'\n'), "one line");
        assert_eq!(serde_json::from_slice::<Response>(&l).unwrap(), r);
        let e = Response::error("no");
        assert_eq!(serde_json::from_slice::<Response>(&e.to_line()).unwrap(), e);
    }

    #[test]
    fn rss_of_this_process_is_known() {
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        assert_eq!(rss_bytes(u32::MAX), None);
    }
}
