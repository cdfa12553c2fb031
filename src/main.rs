//! `awswhitelist`: the command line. A thin layer that wires the configuration to the
//! supervisor (`serve`), to the worker program the supervisor starts (`worker`), to the local
//! MCP loop (`stdio`), to the stdio-to-HTTP bridge (`proxy`) and to the running supervisor's
//! control socket (`ctl`).

mod cli;
mod config;
mod ctl;
mod doctor;
mod keys;
mod logging;
mod proxy;
mod stdio;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing::{error, info_span};

use crate::cli::{Cli, Command, ConfigArgs, ProxyArgs};
use crate::config::{Config, LogConfig, LogFormat};

// The allocator is the system's (glibc). Measured against it with bench/hotpath.sh on the same
// build: mimalloc cost 6.7 KB more per idle connection (17.8 against 11.1) and 22 MiB more at
// rest, for no CPU gain the box's noise did not swamp; jemalloc held the same memory and gave
// no CPU gain that held from one run to the next. See issue 12's notes.

/// Exit code for an unusable configuration or argument (clap uses the same for bad flags).
pub(crate) const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Stdio(args) => stdio_main(&args),
        Command::Proxy(args) => proxy_main(&args),
        Command::Token(args) => keys::token_main(&args),
        Command::Keygen(args) => keys::keygen_main(&args),
        Command::Ctl(args) => ctl::main(&args),
        Command::Doctor(args) => doctor::main(&args),
        Command::Worker => worker_main(),
    }
}

fn load(args: &ConfigArgs) -> Result<Config, ExitCode> {
    Config::load(&args.sources()).map_err(|e| {
        eprintln!("awswhitelist: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(args: &ConfigArgs) -> ExitCode {
    match load(args) {
        Ok(config) => {
            println!(
                "# effective configuration: defaults < file < {}* environment < flags",
                config::ENV_PREFIX
            );
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn serve(args: &ConfigArgs) -> ExitCode {
    // SAFETY: first thing after parsing the arguments: no thread exists yet.
    unsafe { supervisor::proctitle::init() };
    let config = match load(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let log = match logging::init(&config.log) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("awswhitelist: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _span = info_span!("supervisor", pid = std::process::id()).entered();
    let settings = match config.supervisor_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("awswhitelist: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let sources = args.sources();
    let running_log = config.log.clone();
    let control_socket = config.control_socket_path();
    let running_control = control_socket.clone();
    let reload = Box::new(move || {
        let config = Config::load(&sources).map_err(|e| e.to_string())?;
        if config.log != running_log {
            // The supervisor's own log output is set up once; new workers do follow the change.
            tracing::warn!(
                event = "log_settings_changed",
                "[log] changed: workers use the new settings, the supervisor keeps its own until restarted"
            );
        }
        if config.control_socket_path() != running_control {
            tracing::warn!(
                event = "control_socket_changed",
                "control_socket changed: the supervisor keeps listening where it did until restarted"
            );
        }
        config.supervisor_settings().map_err(|e| e.to_string())
    });
    let identity = supervisor::Identity { name: "awswhitelist", version: env!("CARGO_PKG_VERSION") };
    let supervisor = match supervisor::Supervisor::new(settings, reload) {
        Ok(s) => s.on_reopen_logs(move || log.reopen()).identity(identity),
        Err(e) => {
            error!(event = "start_failed", error = %e, "{e}");
            eprintln!("awswhitelist: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The sockets really listened on: systemd may have passed ones that no `bind` names.
    if let Err(e) = config.refuse_unauthenticated(&supervisor.local_addrs()) {
        error!(event = "start_refused", error = %e, "{e}");
        eprintln!("awswhitelist: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let supervisor = match control_socket {
        Some(path) => match supervisor.control_socket(path) {
            Ok(s) => s,
            Err(e) => {
                error!(event = "start_failed", error = %e, "{e}");
                eprintln!("awswhitelist: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => supervisor,
    };
    match supervisor.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(event = "exit", error = %e, "{e}");
            eprintln!("awswhitelist: {e}");
            match e {
                supervisor::Error::BootFailure { .. } => {
                    ExitCode::from(supervisor::SUPERVISOR_BOOT_FAILURE as u8)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// `stdio`: the dispatcher on stdin/stdout, configured like `serve` (page size, size limit, logs).
fn stdio_main(args: &ConfigArgs) -> ExitCode {
    let config = match load(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = logging::init(&config.log) {
        eprintln!("awswhitelist: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match stdio::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(event = "stdio_failed", error = %e, "{e}");
            ExitCode::FAILURE
        }
    }
}

/// `proxy`: needs no config file; its few settings are flags and the MCP_* variables.
fn proxy_main(args: &ProxyArgs) -> ExitCode {
    let log =
        LogConfig { level: args.log_level.clone(), format: LogFormat::Text, file: None, access_file: None };
    if let Err(e) = logging::init(&log) {
        eprintln!("awswhitelist proxy: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match proxy::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(proxy::ProxyError::Setup(e)) => {
            eprintln!("awswhitelist proxy: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            error!(event = "proxy_failed", error = %e, "{e}");
            ExitCode::FAILURE
        }
    }
}

/// The hidden `worker` command: what the supervisor executes for each worker.
fn worker_main() -> ExitCode {
    // SAFETY: first thing after parsing the arguments: no thread exists yet.
    unsafe { supervisor::proctitle::init() };
    let boot_error = ExitCode::from(supervisor::WORKER_BOOT_ERROR as u8);
    let inherited = match supervisor::child::Inherited::from_env(Duration::from_secs(10)) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("awswhitelist worker: {e}");
            return boot_error;
        }
    };
    let config: Config = match serde_json::from_value(inherited.assignment.payload.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("awswhitelist worker: the supervisor sent an unreadable configuration: {e}");
            return boot_error;
        }
    };
    let log = match logging::init_batched(&config.log) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("awswhitelist worker {}: {e}", inherited.assignment.worker_id);
            return boot_error;
        }
    };
    let _span =
        info_span!("worker", worker = inherited.assignment.worker_id, pid = std::process::id()).entered();
    let hooks = worker::Hooks { reopen_logs: Some(Box::new(move || log.reopen())) };
    let settings = match config.settings() {
        Ok(s) => s,
        Err(e) => {
            // `serve` validated this very configuration, so only a bug gets here; say so.
            error!(event = "worker_failed", error = %e, "the configuration does not convert: {e}");
            return boot_error;
        }
    };
    match worker::run(inherited, settings, hooks) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(event = "worker_failed", error = %e, "{e}");
            boot_error
        }
    }
}
