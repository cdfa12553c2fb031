//! The signal queue: handlers only record the signal and wake the main loop.
//!
//! Like gunicorn's arbiter, nothing happens inside a signal handler. signal-hook records which
//! signals arrived and writes a byte to a socket the main loop polls, so a signal interrupts the
//! loop's sleep immediately and is then handled by ordinary code.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use signal_hook::consts::signal::*;
use signal_hook::iterator::Signals;

/// Every signal the supervisor acts on.
pub const HANDLED: [i32; 9] = [SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGCHLD];

/// Pending signals plus a descriptor that becomes readable when one arrives.
pub struct SignalQueue {
    signals: Signals,
    wake: UnixStream,
}

impl SignalQueue {
    /// Installs the handlers.
    pub fn install() -> io::Result<SignalQueue> {
        let (wake, notify) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        for sig in HANDLED {
            signal_hook::low_level::pipe::register(sig, notify.try_clone()?)?;
        }
        let signals = Signals::new(HANDLED)?;
        Ok(SignalQueue { signals, wake })
    }

    /// The descriptor to poll.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Signals that arrived since the last call, most urgent first: a stop request must win over
    /// a reload that arrived in the same instant.
    pub fn drain(&mut self) -> Vec<i32> {
        let mut sink = [0u8; 64];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        let mut pending: Vec<i32> = self.signals.pending().collect();
        pending.sort_by_key(|s| match *s {
            SIGINT | SIGQUIT => 0,
            SIGTERM => 1,
            SIGCHLD => 2,
            _ => 3,
        });
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every test here raises signals at its own process; serialised so counts do not mix.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn counted_signals_are_counted_others_merged() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = SignalQueue::install().unwrap();
        q.drain();
        // raise(3) runs the handler before it returns, so none of these can merge in the kernel.
        for sig in [SIGTTIN, SIGTTIN, SIGTTIN, SIGTTOU, SIGHUP, SIGHUP, SIGUSR1, SIGUSR1] {
            signal_hook::low_level::raise(sig).unwrap();
        }
        let mut got: Vec<i32> = q.drain().into_iter().filter(|s| *s != SIGCHLD).collect();
        got.sort();
        let mut want = vec![SIGHUP, SIGTTIN, SIGTTIN, SIGTTIN, SIGTTOU, SIGUSR1];
        want.sort();
        assert_eq!(got, want, "every TTIN/TTOU counts; HUP and USR1 merge");
        assert!(q.drain().iter().all(|s| *s == SIGCHLD), "a drain empties the queue");
    }

    #[test]
    fn stop_requests_come_first() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = SignalQueue::install().unwrap();
        q.drain();
        for sig in [SIGHUP, SIGTTIN, SIGTERM, SIGQUIT] {
            signal_hook::low_level::raise(sig).unwrap();
        }
        let got: Vec<i32> = q.drain().into_iter().filter(|s| *s != SIGCHLD).collect();
        assert_eq!(got, [SIGQUIT, SIGTERM, SIGHUP, SIGTTIN]);
    }

    #[test]
    fn a_signal_wakes_the_poller() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = SignalQueue::install().unwrap();
        q.drain();
        signal_hook::low_level::raise(SIGUSR1).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!((&q.wake).read(&mut byte).unwrap(), 1, "the wake socket is readable");
        assert!(q.drain().contains(&SIGUSR1));
    }
}
