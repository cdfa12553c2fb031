//! The supervisor's phases as one enum: what it is doing with the service as a whole.
//!
//! Each phase carries exactly the data that only makes sense in it: the known-good state to fall
//! back on exists only while a reload is in flight, a stop deadline only while stopping, the
//! error that ends the process only when halting. So "reloading while stopping" or "halted but
//! still serving" cannot be written down. The transitions are methods here; the side effects
//! (logging, systemd, signalling workers) stay with their callers in the arbiter.
//!
//! Transitions:
//! - `Starting` → `Running` when every slot is ready (READY=1 to systemd).
//! - `Running` → `Reloading` on an accepted HUP; → `Running` when the new generation is ready
//!   everywhere, or when it cannot boot (back to the previous state).
//! - `Starting` + HUP keeps the fallback inside `Starting`; once settled it reports READY and
//!   passes through `Reloading` so the reload completes too.
//! - Any of those → `Stopping` on TERM/INT/QUIT (INT/QUIT make a TERM stop fast, never the
//!   reverse); → `Halting` when workers cannot boot. Neither has a way back.

use std::rc::Rc;
use std::time::Instant;

use super::{Error, Settings};
use crate::sock::Listener;

/// The state a reload replaced, to return to if the new workers cannot boot.
pub(super) struct Previous {
    /// The settings that ran before.
    pub settings: Settings,
    /// Their generation.
    pub generation: u64,
    /// Their listeners (kept open so a fallback can hand them out again).
    pub listeners: Vec<Rc<Listener>>,
}

/// What the supervisor is doing with the service as a whole.
pub(super) enum Phase {
    /// The first generation is booting; systemd has not been told READY yet. `reload` holds the
    /// state to fall back on if a HUP arrived before that.
    Starting {
        /// A reload accepted while starting.
        reload: Option<Previous>,
    },
    /// Every slot is served by the current generation; nothing is in flight.
    Running,
    /// A new generation is rolling in, slot by slot.
    Reloading {
        /// The oldest known-good state (a reload during a reload keeps it).
        previous: Previous,
    },
    /// Stopping on request: workers drain, SIGKILL at `deadline`, then the process exits 0.
    Stopping {
        /// INT/QUIT (short grace, workers get SIGQUIT) rather than TERM.
        fast: bool,
        /// When remaining workers are killed.
        deadline: Instant,
    },
    /// Stopping because workers cannot boot; always fast, and the process exits with `error`.
    Halting {
        /// What `run` returns.
        error: Error,
        /// When remaining workers are killed.
        deadline: Instant,
    },
}

/// What settling a generation (every slot ready on it) means for systemd and the log.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Settled {
    /// The service became ready for the first time.
    Ready,
    /// A reload finished.
    ReloadComplete,
}

/// Why the service stops.
pub(super) enum StopCause {
    /// TERM: drain within `graceful_timeout`.
    Graceful,
    /// INT/QUIT: drain briefly, then kill.
    Fast,
    /// Workers cannot boot: stop fast and fail with this error.
    Halt(Error),
}

impl StopCause {
    /// Whether workers get the short grace and SIGQUIT.
    pub fn is_fast(&self) -> bool {
        !matches!(self, StopCause::Graceful)
    }
}

impl Phase {
    /// The phase in one word, for `ctl status` and the process title.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Starting { .. } => "starting",
            Phase::Running => "running",
            Phase::Reloading { .. } => "reloading",
            Phase::Stopping { .. } => "stopping",
            Phase::Halting { .. } => "halting",
        }
    }

    /// Stopping or halting: no reloads, no new workers, no readiness reports.
    pub fn is_stopping(&self) -> bool {
        matches!(self, Phase::Stopping { .. } | Phase::Halting { .. })
    }

    /// When the workers of a stop are killed, if stopping.
    pub fn stop_deadline(&self) -> Option<Instant> {
        match self {
            Phase::Stopping { deadline, .. } | Phase::Halting { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Whether a reload is in flight with a known-good state to fall back on.
    pub fn has_fallback(&self) -> bool {
        matches!(self, Phase::Starting { reload: Some(_) } | Phase::Reloading { .. })
    }

    /// A reload was accepted; `replaced` is what ran until now. A reload during a reload keeps
    /// the oldest known-good state, since the one in between never proved itself.
    pub fn begin_reload(&mut self, replaced: Previous) {
        *self = match std::mem::replace(self, Phase::Running) {
            Phase::Starting { reload: None } => Phase::Starting { reload: Some(replaced) },
            Phase::Running => Phase::Reloading { previous: replaced },
            unchanged => unchanged,
        };
    }

    /// The new generation cannot boot: hands back the state to return to, ending the reload.
    pub fn take_fallback(&mut self) -> Option<Previous> {
        match std::mem::replace(self, Phase::Running) {
            Phase::Starting { reload: Some(previous) } => {
                *self = Phase::Starting { reload: None };
                Some(previous)
            }
            Phase::Reloading { previous } => Some(previous),
            unchanged => {
                *self = unchanged;
                None
            }
        }
    }

    /// Every slot is ready on the current generation: what that completes, if anything. A
    /// reload accepted while starting completes on the next turn, after READY (as systemd
    /// expects: READY, then the reload's own READY).
    pub fn settle(&mut self) -> Option<Settled> {
        let (next, settled) = match std::mem::replace(self, Phase::Running) {
            Phase::Starting { reload: None } => (Phase::Running, Some(Settled::Ready)),
            Phase::Starting { reload: Some(previous) } => {
                (Phase::Reloading { previous }, Some(Settled::Ready))
            }
            Phase::Reloading { .. } => (Phase::Running, Some(Settled::ReloadComplete)),
            unchanged => (unchanged, None),
        };
        *self = next;
        settled
    }

    /// Whether a stop for `cause` changes how the service stops: the first stop does, a fast
    /// one after a graceful one does; a second request of the same or a gentler kind does not.
    pub fn escalates(&self, cause: &StopCause) -> bool {
        match self {
            Phase::Stopping { fast, .. } => !fast && cause.is_fast(),
            Phase::Halting { .. } => false,
            _ => true,
        }
    }

    /// Enters the stop for `cause` with its kill deadline. Called only when [`Phase::escalates`]
    /// holds, or to record a halt's error on a stop that is already fast (keeping its deadline).
    pub fn stop(&mut self, cause: StopCause, deadline: Instant) {
        *self = match cause {
            StopCause::Halt(error) => Phase::Halting { error, deadline },
            other => Phase::Stopping { fast: other.is_fast(), deadline },
        };
    }

    /// How `run` ends once the last worker is gone.
    pub fn outcome(self) -> Result<(), Error> {
        match self {
            Phase::Halting { error, .. } => Err(error),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::arbiter::WorkerSpec;

    fn previous(generation: u64) -> Previous {
        Previous {
            settings: Settings {
                binds: Vec::new(),
                workers: 1,
                timeout: Duration::from_secs(30),
                graceful_timeout: Duration::from_secs(30),
                max_requests: 0,
                max_requests_jitter: 0,
                backlog: 16,
                reuse_port: false,
                pidfile: None,
                run_as: None,
                umask: None,
                worker: WorkerSpec {
                    program: "/bin/true".into(),
                    args: Vec::new(),
                    payload: serde_json::Value::Null,
                },
            },
            generation,
            listeners: Vec::new(),
        }
    }

    fn fallback_generation(phase: &Phase) -> Option<u64> {
        match phase {
            Phase::Starting { reload: Some(p) } | Phase::Reloading { previous: p } => Some(p.generation),
            _ => None,
        }
    }

    fn halt() -> StopCause {
        StopCause::Halt(Error::BootFailure { attempts: 5, last: "test".into() })
    }

    #[test]
    fn a_first_start_settles_into_running_with_ready() {
        let mut phase = Phase::Starting { reload: None };
        assert!(!phase.has_fallback());
        assert_eq!(phase.settle(), Some(Settled::Ready));
        assert!(matches!(phase, Phase::Running));
        assert_eq!(phase.settle(), None, "settling again reports nothing");
    }

    #[test]
    fn a_reload_during_a_reload_keeps_the_oldest_known_good_state() {
        let mut phase = Phase::Running;
        phase.begin_reload(previous(1));
        phase.begin_reload(previous(2));
        assert_eq!(fallback_generation(&phase), Some(1));
        assert_eq!(phase.settle(), Some(Settled::ReloadComplete));
        assert!(matches!(phase, Phase::Running));
    }

    #[test]
    fn a_reload_while_starting_reports_ready_then_reload_complete() {
        let mut phase = Phase::Starting { reload: None };
        phase.begin_reload(previous(1));
        assert_eq!(fallback_generation(&phase), Some(1));
        assert_eq!(phase.settle(), Some(Settled::Ready));
        assert_eq!(phase.settle(), Some(Settled::ReloadComplete));
        assert!(matches!(phase, Phase::Running));
    }

    #[test]
    fn a_fallback_ends_the_reload_once() {
        let mut phase = Phase::Running;
        phase.begin_reload(previous(1));
        assert_eq!(phase.take_fallback().map(|p| p.generation), Some(1));
        assert!(matches!(phase, Phase::Running));
        assert!(phase.take_fallback().is_none());

        let mut starting = Phase::Starting { reload: None };
        starting.begin_reload(previous(1));
        assert!(starting.take_fallback().is_some());
        assert!(matches!(starting, Phase::Starting { reload: None }), "still waiting for the first READY");
    }

    #[test]
    fn stopping_drops_the_fallback_and_only_escalates() {
        let mut phase = Phase::Running;
        phase.begin_reload(previous(1));
        let deadline = Instant::now();
        assert!(phase.escalates(&StopCause::Graceful));
        phase.stop(StopCause::Graceful, deadline);
        assert!(phase.is_stopping() && !phase.has_fallback());
        assert_eq!(phase.stop_deadline(), Some(deadline));
        assert!(!phase.escalates(&StopCause::Graceful), "TERM twice is TERM once");
        assert!(phase.escalates(&StopCause::Fast), "INT after TERM makes it fast");
        phase.stop(StopCause::Fast, deadline);
        assert!(!phase.escalates(&StopCause::Graceful), "TERM after INT does not slow it down");
        assert!(!phase.escalates(&StopCause::Fast));
        phase.begin_reload(previous(2));
        assert!(phase.is_stopping() && !phase.has_fallback(), "no reload once stopping");
        assert_eq!(phase.settle(), None);
        assert!(phase.outcome().is_ok());
    }

    #[test]
    fn a_halt_ends_in_its_error() {
        let mut phase = Phase::Running;
        assert!(phase.escalates(&halt()));
        phase.stop(halt(), Instant::now());
        assert!(phase.is_stopping());
        assert!(!phase.escalates(&StopCause::Fast));
        assert!(matches!(phase.outcome(), Err(Error::BootFailure { attempts: 5, .. })));
    }
}
