//! `awswhitelist ctl`: asks the running supervisor over its control socket (status, workers) or
//! tells it what a signal would (reload = HUP, add-worker = TTIN, remove-worker = TTOU,
//! upgrade = USR2, stop = TERM, stop --fast = INT), and prints its answer for people or, with
//! `--json`, as the supervisor sent it.
//!
//! The socket is found like the service finds it: `--socket`, else `control_socket` from the
//! same configuration `serve` reads, else `control.sock` in `$RUNTIME_DIRECTORY`, else the
//! shipped unit's `/run/awswhitelist/control.sock` (a shell has no `$RUNTIME_DIRECTORY`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use supervisor::control::client::{self, ClientError};
use supervisor::control::{Command, Response, Status, WorkerStatus};

use crate::config::{Config, Sources, CONTROL_SOCKET_NAME};

/// The control socket of the shipped systemd unit (`RuntimeDirectory=awswhitelist`).
const UNIT_SOCKET: &str = "/run/awswhitelist/control.sock";
/// Exit code when the supervisor answered with a refusal or an error.
const EXIT_REFUSED: u8 = 1;
/// Exit code when the supervisor cannot be reached (no socket, nothing listening, no access).
const EXIT_UNREACHABLE: u8 = 3;

/// Where the supervisor is and how to print its answer.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// What to ask or tell the supervisor.
    #[command(subcommand)]
    pub command: CtlCommand,
    /// The service's TOML config file, to find its control socket (`control_socket`).
    #[arg(short, long, env = "AWSWHITELIST_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The control socket itself, instead of the one the configuration names.
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the supervisor's answer as one JSON object (for scripts and monitoring).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The requests `ctl` sends.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum CtlCommand {
    /// The supervisor (version, pid, generation, uptime, phase) and every worker.
    Status,
    /// Every worker: slot, pid, generation, state, age, requests, connections, memory, heartbeat.
    Workers,
    /// Re-read the configuration and roll the workers onto it, as HUP does (a bad configuration
    /// is refused, and the running one keeps serving).
    Reload,
    /// One worker more, as TTIN does.
    AddWorker,
    /// One worker fewer (never none), as TTOU does.
    RemoveWorker,
    /// Start the binary at its path again and hand over to it once its workers are ready, as
    /// USR2 does.
    Upgrade,
    /// Stop: workers finish their requests within graceful_timeout, as TERM does.
    Stop {
        /// Give workers one second, then kill them, as INT does.
        #[arg(long)]
        fast: bool,
    },
}

impl CtlCommand {
    fn request(self) -> Command {
        match self {
            CtlCommand::Status => Command::Status,
            CtlCommand::Workers => Command::Workers,
            CtlCommand::Reload => Command::Reload,
            CtlCommand::AddWorker => Command::AddWorker,
            CtlCommand::RemoveWorker => Command::RemoveWorker,
            CtlCommand::Upgrade => Command::Upgrade,
            CtlCommand::Stop { fast } => Command::Stop { fast },
        }
    }
}

/// Runs `ctl`: exit 0 when done or accepted, 1 when refused, 2 for a bad configuration, 3 when
/// the supervisor cannot be reached.
pub fn main(args: &CtlArgs) -> ExitCode {
    let path = match socket_path(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("awswhitelist ctl: {e}");
            return ExitCode::from(crate::EXIT_CONFIG);
        }
    };
    let response = match client::call(&path, args.command.request(), Duration::from_secs(10)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("awswhitelist ctl: {e}");
            let hint = matches!(e, ClientError::Missing(_)) && args.socket.is_none() && args.config.is_none();
            if hint {
                eprintln!("awswhitelist ctl: (pass --config with the service's configuration, or --socket)");
            }
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response).unwrap_or_default());
    } else {
        print!("{}", render(&response));
    }
    if response.ok {
        ExitCode::SUCCESS
    } else {
        if args.json {
            // The JSON went to stdout; people reading stderr still learn why.
            eprintln!("awswhitelist ctl: {}", response.error.as_deref().unwrap_or("refused"));
        }
        ExitCode::from(EXIT_REFUSED)
    }
}

/// The socket to connect to (see the module doc for the order).
fn socket_path(args: &CtlArgs) -> Result<PathBuf, String> {
    if let Some(path) = &args.socket {
        return Ok(path.clone());
    }
    let sources = Sources { file: args.config.clone(), flags: Default::default() };
    let config = Config::extract(&sources).map_err(|e| e.to_string())?;
    Ok(config.control_socket_path().unwrap_or_else(|| {
        debug_assert!(UNIT_SOCKET.ends_with(CONTROL_SOCKET_NAME));
        PathBuf::from(UNIT_SOCKET)
    }))
}

/// The answer for people.
fn render(r: &Response) -> String {
    if !r.ok {
        return format!("refused: {}\n", r.error.as_deref().unwrap_or("(no reason given)"));
    }
    if let Some(status) = &r.status {
        return render_status(status);
    }
    if let Some(workers) = &r.workers {
        return render_workers(workers);
    }
    match &r.accepted {
        Some(a) => format!("{}\n(workers: {}, generation {})\n", a.message, a.target, a.generation),
        None => "done\n".to_string(),
    }
}

fn render_status(s: &Status) -> String {
    let upgrade = s.upgrade_pid.map(|p| format!(", upgrading to pid {p}")).unwrap_or_default();
    format!(
        "{} {}: supervisor pid {}, generation {}, up {}, {}{upgrade}\n{} of {} workers serving\n{}",
        s.name,
        s.version,
        s.pid,
        s.generation,
        duration(s.uptime_secs),
        s.phase,
        s.serving,
        s.target,
        render_workers(&s.workers)
    )
}

fn render_workers(workers: &[WorkerStatus]) -> String {
    let mut out = format!(
        "{:>4} {:>8} {:>4}  {:<20} {:>8} {:>9} {:>6} {:>10} {:>10}\n",
        "SLOT", "PID", "GEN", "STATE", "AGE", "REQUESTS", "CONNS", "MEMORY", "HEARTBEAT"
    );
    for w in workers {
        let state = match &w.stopping {
            Some(why) => format!("{} ({why})", w.state.as_str()),
            None => w.state.as_str().to_string(),
        };
        let memory = w.rss_bytes.map_or_else(|| "-".to_string(), bytes);
        out.push_str(&format!(
            "{:>4} {:>8} {:>4}  {:<20} {:>8} {:>9} {:>6} {:>10} {:>10}\n",
            w.slot,
            w.pid,
            w.generation,
            state,
            duration(w.age_secs),
            w.requests,
            w.connections,
            memory,
            format!("{} ago", duration(w.last_heartbeat_secs)),
        ));
    }
    out
}

/// `0.4s`, `12s`, `5m03s`, `2h03m`, `3d04h`.
fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_string();
    }
    if secs < 10.0 {
        return format!("{secs:.1}s");
    }
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `512 KiB`, `12.3 MiB`, `1.1 GiB`.
fn bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1024.0 * 1024.0 {
        format!("{:.0} KiB", n / 1024.0)
    } else if n < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    } else {
        format!("{:.1} GiB", n / 1024.0 / 1024.0 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervisor::control::{Accepted, WorkerState};

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(duration(0.42), "0.4s");
        assert_eq!(duration(42.0), "42s");
        assert_eq!(duration(303.0), "5m03s");
        assert_eq!(duration(7380.0), "2h03m");
        assert_eq!(duration(273600.0), "3d04h");
        assert_eq!(duration(f64::NAN), "-");
        assert_eq!(bytes(512 * 1024), "512 KiB");
        assert_eq!(bytes(12_900_000), "12.3 MiB");
    }

    #[test]
    fn answers_render_for_people() {
        let mut ok = Response::ok();
        ok.accepted =
            Some(Accepted { message: "one worker more: 3 workers".into(), target: 3, generation: 1 });
        assert_eq!(render(&ok), "one worker more: 3 workers\n(workers: 3, generation 1)\n");
        assert_eq!(
            render(&Response::error("at least one worker stays")),
            "refused: at least one worker stays\n"
        );
        let w = WorkerStatus {
            slot: 2,
            pid: 4242,
            generation: 3,
            state: WorkerState::Draining,
            stopping: Some("reload".into()),
            age_secs: 75.0,
            requests: 10,
            connections: 1,
            rss_bytes: None,
            last_heartbeat_secs: 0.31,
        };
        let table = render_workers(&[w]);
        let row = table.lines().nth(1).unwrap();
        for cell in ["2", "4242", "3", "draining (reload)", "1m15s", "10", "-", "0.3s ago"] {
            assert!(row.contains(cell), "{cell:?} missing from {row:?}");
        }
    }
}
