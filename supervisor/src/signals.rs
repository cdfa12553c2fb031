//! The signal queue: handlers only count the signal and wake the main loop.
//!
//! Like gunicorn's arbiter, nothing happens inside a signal handler. Each handled signal has an
//! atomic counter; the handler adds one and writes a byte to a socket the main loop polls, so a
//! signal interrupts the loop's sleep immediately and is then handled by ordinary code.
//!
//! Counting, not flagging: a flag set per signal (what `signal_hook::iterator::Signals` keeps)
//! turns three TTINs that arrive while the loop is busy spawning a worker into one. Here every
//! signal the handler receives is counted, and [`SignalQueue::drain`] decides per signal whether
//! the count matters ([`COUNTED`]) or several arrivals mean the same as one (every other signal:
//! see [`SignalQueue::drain`] for why each is safe to merge). The kernel itself keeps at most one
//! pending instance of a standard signal, so two signals sent before the supervisor runs at all
//! are merged before any handler sees them; nothing in user space can count those.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use nix::sys::socket::{send, MsgFlags};
use signal_hook::consts::signal::*;
use tracing::warn;

/// Every signal the supervisor acts on.
pub const HANDLED: [i32; 9] = [SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGCHLD];

/// Signals each of whose arrivals is one request: one worker more or one worker fewer.
pub const COUNTED: [i32; 2] = [SIGTTIN, SIGTTOU];

/// Most arrivals of one counted signal handed out by a single [`SignalQueue::drain`]; the rest
/// are dropped with a warning. Far above any deliberate burst (the worker count itself is capped
/// at 1024), it only stops a runaway script from queueing millions of spawns.
pub const QUEUE_LIMIT: u32 = 1024;

/// Counts of signals received, plus a descriptor that becomes readable when one arrives.
pub struct SignalQueue {
    counts: Arc<[AtomicU32; HANDLED.len()]>,
    wake: UnixStream,
}

impl SignalQueue {
    /// Installs the handlers.
    pub fn install() -> io::Result<SignalQueue> {
        let (wake, notify) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        let notify = Arc::new(notify);
        let counts: Arc<[AtomicU32; HANDLED.len()]> = Arc::new(std::array::from_fn(|_| AtomicU32::new(0)));
        for (i, sig) in HANDLED.into_iter().enumerate() {
            let (counts, notify) = (counts.clone(), notify.clone());
            // SAFETY: the action only does async-signal-safe things: an atomic add and one
            // send(2) on a socket it owns; it allocates and locks nothing. The registry saves
            // and restores errno around it.
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    // Count first, then wake: the loop that wakes up must find the count.
                    counts[i].fetch_add(1, Ordering::SeqCst);
                    // Never block (a full socket already means "wake up"), never SIGPIPE.
                    let _ = send(notify.as_raw_fd(), &[1], MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL);
                })
            }?;
        }
        Ok(SignalQueue { counts, wake })
    }

    /// The descriptor to poll.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Signals that arrived since the last call, most urgent first: a stop request must win over
    /// a reload that arrived in the same instant.
    ///
    /// A [`COUNTED`] signal appears once per arrival (at most [`QUEUE_LIMIT`] times). Every
    /// other signal appears once however often it arrived, because doing its work once after
    /// the last arrival is exactly what the sender asked for:
    /// - HUP re-reads the configuration file, so one reload after the last HUP reads the newest
    ///   file; rolling the workers again onto the same file would only churn them. A HUP that
    ///   arrives after the reload has read the file is counted for the next drain, so no edit is
    ///   ever missed.
    /// - TERM, INT and QUIT ask for a state (stopping), not for an amount of work; asking twice
    ///   is asking once. INT/QUIT after TERM still escalates, because they are different signals.
    /// - USR1 reopens the log files: once after the last rotation is enough.
    /// - CHLD only says "reap"; reaping collects every exited worker each turn anyway.
    /// - USR2 starts a binary upgrade; a second one while that upgrade is in flight would be
    ///   refused anyway, so several arrivals mean one upgrade.
    pub fn drain(&mut self) -> Vec<i32> {
        let mut sink = [0u8; 64];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        let mut pending = Vec::new();
        for (i, sig) in HANDLED.into_iter().enumerate() {
            let arrived = self.counts[i].swap(0, Ordering::SeqCst);
            let times = if COUNTED.contains(&sig) { arrived } else { arrived.min(1) };
            if times > QUEUE_LIMIT {
                warn!(
                    event = "signals_dropped",
                    signal = sig,
                    arrived,
                    kept = QUEUE_LIMIT,
                    "{arrived} signals {sig} at once; acting on {QUEUE_LIMIT}"
                );
            }
            pending.extend(std::iter::repeat_n(sig, times.min(QUEUE_LIMIT) as usize));
        }
        // A stable sort: the arrivals of one signal stay together and in order.
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
