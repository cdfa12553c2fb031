//! Telling systemd what the service is doing (`sd_notify`); silent when not run by systemd.

use tracing::debug;

use sd_notify::NotifyState;

/// Workers are up: `systemctl start` may return.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A supervisor started by an upgrade is ready: it is now the service's main process.
pub fn ready_as_main(status: &str) {
    send(&[NotifyState::MainPid(std::process::id()), NotifyState::Ready, NotifyState::Status(status)]);
}

/// The old supervisor of an upgrade hands the service over to `pid`. With `NotifyAccess=main`
/// systemd only listens to the main process, so the old one must say it (the new one's own
/// `MAINPID=` counts only with `NotifyAccess=all`).
pub fn main_pid(pid: u32) {
    send(&[NotifyState::MainPid(pid), NotifyState::Status("upgraded: handed over to the new binary")]);
}

/// A reload began; systemd waits for the next [`ready`] before calling it done.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown began.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// A one-line state for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}
