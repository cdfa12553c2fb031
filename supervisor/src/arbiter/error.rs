//! Why the supervisor could not start or had to stop: the one error type `run` and `new` return.

use std::io;

/// Why the supervisor could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The kernel's reason.
        source: io::Error,
    },
    /// Systemd passed sockets that cannot be used.
    #[error("cannot adopt the sockets passed by systemd: {0}")]
    Adopt(io::Error),
    /// The pidfile could not be written.
    #[error("pidfile: {0}")]
    Pidfile(io::Error),
    /// The control socket could not be created (the message names its path and why).
    #[error("control_socket {0}")]
    Control(io::Error),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(io::Error),
    /// Workers keep dying before they are ready.
    #[error("workers failed to boot {attempts} times in a row (last: {last}); giving up — the worker log lines above say why")]
    BootFailure {
        /// Consecutive failures.
        attempts: u32,
        /// How the last one ended.
        last: String,
    },
}
