//! `awswhitelist doctor`: proves a deployment before an assistant uses it — `nginx -t` for the
//! whole of it. The configuration, the listeners, the state directory, the audit log, the
//! marker key, the authentication keys; then (unless `--offline`) the AWS credentials and where
//! they come from, the region, the account, AWS's clock against ours, every allowed and swept
//! security group (it exists; a `DryRun` add and remove are allowed), the JWKS, and Redis (a
//! PING through the workers' own link) when `[redis]` is configured.
//!
//! One line per check: `ok`, `warn` or `fail`, what was found and, unless ok, the fix; `--json`
//! prints the same as one document. Exits 1 when any check fails. It changes nothing: no file
//! is created (not even the state directory or the marker key), no rule is added or removed.

mod aws;
mod host;
mod keys;
mod redis;

use std::fmt;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::cli::ConfigArgs;
use crate::config::Config;

/// What `doctor` checks and how it reports.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The configuration, exactly as `serve` would read it.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print one JSON document (`{"ok": …, "checks": [{"check", "status", "found", "fix"}]}`).
    #[arg(long)]
    pub json: bool,
    /// Only what this host can tell: no AWS, no JWKS (what the systemd unit runs before start).
    #[arg(long)]
    pub offline: bool,
    /// Check this security group too (repeatable), besides the policy's and the sweeper's.
    #[arg(long = "security-group", value_name = "SG")]
    pub security_groups: Vec<String>,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but deserves a look.
    Warn,
    /// Will not work: fix before use.
    Fail,
    /// Not checked (`--offline`).
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, e.g. `state_dir` or `group sg-0abc…`.
    pub check: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub found: String,
    /// What to do about it (warn and fail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A check that passed.
    pub fn ok(check: impl Into<String>, found: impl Into<String>) -> Check {
        Check { check: check.into(), status: Status::Ok, found: found.into(), fix: None }
    }

    /// A check that passed with a reservation.
    pub fn warn(check: impl Into<String>, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { check: check.into(), status: Status::Warn, found: found.into(), fix: Some(fix.into()) }
    }

    /// A check that failed.
    pub fn fail(check: impl Into<String>, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { check: check.into(), status: Status::Fail, found: found.into(), fix: Some(fix.into()) }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4}  {}: {}", self.status, self.check, self.found)?;
        match &self.fix {
            Some(fix) => write!(f, " -- fix: {fix}"),
            None => Ok(()),
        }
    }
}

/// The checks so far, printed as they come (text) or all at the end (JSON).
struct Report {
    json: bool,
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, check: Check) {
        if !self.json {
            println!("{check}");
        }
        self.checks.push(check);
    }

    fn finish(self) -> ExitCode {
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        let failed = count(Status::Fail);
        if self.json {
            let doc = serde_json::json!({"ok": failed == 0, "checks": self.checks});
            println!("{doc}");
        } else {
            println!(
                "doctor: {} ok, {} warn, {failed} fail{}",
                count(Status::Ok),
                count(Status::Warn),
                match count(Status::Skip) {
                    0 => String::new(),
                    n => format!(", {n} skipped"),
                }
            );
        }
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Runs every check; exit 0 when none failed, 1 otherwise.
pub fn main(args: &DoctorArgs) -> ExitCode {
    let mut report = Report { json: args.json, checks: Vec::new() };
    let sources = args.config.sources();
    let shown =
        sources.file.as_ref().map_or("the embedded defaults".to_string(), |f| f.display().to_string());
    let source = sources
        .file
        .as_ref()
        .map_or("the embedded defaults".to_string(), |f| format!("the file {}", f.display()));
    let config = match Config::load(&sources) {
        Ok(config) => config,
        Err(e) => {
            for p in e.0 {
                let value = if p.value.is_empty() { String::new() } else { format!(" = {}", p.value) };
                report.add(Check::fail(
                    "config",
                    format!("{}{value}: {}", p.key, p.reason),
                    format!(
                        "correct {} in {shown} (or the AWSWHITELIST_* variable or flag that sets it); \
                         nothing else is checked until the configuration loads",
                        p.key
                    ),
                ));
            }
            return report.finish();
        }
    };
    let settings = match config.settings() {
        Ok(s) => s,
        Err(e) => {
            report.add(Check::fail("config", e.to_string(), "correct the keys named"));
            return report.finish();
        }
    };
    report.add(Check::ok("config", format!("valid: {source}, with AWSWHITELIST_* variables and flags")));
    for check in host::listeners(&config) {
        report.add(check);
    }
    let w = &settings.whitelist;
    report.add(host::state_dir(&w.state_dir));
    report.add(host::audit_log(&w.audit_log, &w.state_dir));
    report.add(host::marker_key(&w.marker_key, &w.state_dir));
    let authenticator = keys::load(&settings.auth);
    if let Some(check) = &authenticator.1 {
        report.add(check.clone());
    }
    if args.offline {
        report.add(Check {
            check: "aws".into(),
            status: Status::Skip,
            found: "--offline: AWS credentials, groups, clock, the JWKS and Redis not checked".into(),
            fix: None,
        });
        return report.finish();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            report.add(Check::fail("doctor", format!("cannot start its runtime: {e}"), "see the error"));
            return report.finish();
        }
    };
    runtime.block_on(async {
        if let Some(check) = redis::check(settings.redis.as_ref()).await {
            report.add(check);
        }
        for check in aws::check(&settings, &args.security_groups).await {
            report.add(check);
        }
        if let Some(auth) = &authenticator.0 {
            if let Some(check) = keys::jwks(auth, settings.auth.jwks_url.as_deref()).await {
                report.add(check);
            }
        }
    });
    report.finish()
}
