//! Flow, atom and retry states, intentions, and the one transition table the engine and
//! the stores obey (taskflow's `states.py`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored in the database and shown to people.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }
    };
}

string_enum!(
    /// The state of a whole flow.
    FlowState {
        Pending = "PENDING",
        Running = "RUNNING",
        Success = "SUCCESS",
        Failure = "FAILURE",
        Reverted = "REVERTED",
        Suspending = "SUSPENDING",
        Suspended = "SUSPENDED",
        Resuming = "RESUMING",
    }
);

string_enum!(
    /// The state of one atom (a task or a retry controller).
    AtomState {
        Pending = "PENDING",
        Running = "RUNNING",
        Success = "SUCCESS",
        Failure = "FAILURE",
        Reverting = "REVERTING",
        Reverted = "REVERTED",
        RevertFailure = "REVERT_FAILURE",
        Ignore = "IGNORE",
        Retrying = "RETRYING",
    }
);

string_enum!(
    /// What the engine means to do with an atom next; persisted so a crash during a revert
    /// resumes as a revert.
    Intention {
        Execute = "EXECUTE",
        Revert = "REVERT",
        Retry = "RETRY",
        Ignore = "IGNORE",
    }
);

string_enum!(
    /// Whether an atom is a task or a retry controller.
    AtomKind {
        Task = "TASK",
        Retry = "RETRY",
    }
);

impl FlowState {
    /// Whether the flow is finished for good (no worker claims it again).
    pub fn is_terminal(self) -> bool {
        matches!(self, FlowState::Success | FlowState::Failure | FlowState::Reverted)
    }
}

/// One transition table for every kind of state.
pub trait Transitions: Copy + Eq {
    /// Whether `self -> to` is allowed. Staying in the same state is always allowed and
    /// changes nothing.
    fn can_transition(self, to: Self) -> bool;
}

impl Transitions for FlowState {
    fn can_transition(self, to: Self) -> bool {
        use FlowState::*;
        self == to
            || match self {
                // An operator's revert of a flow in which nothing ran ends it at once.
                Pending => matches!(to, Running | Reverted),
                Running => matches!(to, Success | Failure | Reverted | Suspending | Resuming | Suspended),
                Success => matches!(to, Running | Pending),
                Failure => matches!(to, Running),
                Reverted => matches!(to, Pending),
                Suspending => matches!(to, Suspended | Success | Failure | Reverted | Resuming),
                Suspended => matches!(to, Running | Reverted),
                Resuming => matches!(to, Suspended | Running),
            }
    }
}

/// The atom table for a task; [`can_transition_atom`] adds what retries may do.
impl Transitions for AtomState {
    fn can_transition(self, to: Self) -> bool {
        can_transition_atom(AtomKind::Task, self, to)
    }
}

/// The atom transition table, for tasks and for retry controllers.
///
/// It is taskflow's table with two additions: RUNNING -> REVERTING, taken only when a flow
/// is resumed and finds an atom that was running when a revert was decided (taskflow does
/// the same without saying so); and REVERT_FAILURE -> FAILURE, taken only by an operator's
/// revert request ([`crate::FlowStore::request_revert`]), which gives a failed revert
/// another try. Retries may also go SUCCESS -> RETRYING -> RUNNING.
pub fn can_transition_atom(kind: AtomKind, from: AtomState, to: AtomState) -> bool {
    use AtomState::*;
    if from == to {
        return true;
    }
    let task = match from {
        Pending => matches!(to, Running | Ignore),
        Running => matches!(to, Success | Failure | Reverting),
        Success | Failure => matches!(to, Reverting),
        Reverting => matches!(to, Reverted | RevertFailure),
        Reverted | Ignore => matches!(to, Pending),
        RevertFailure => matches!(to, Failure),
        Retrying => false,
    };
    task || (kind == AtomKind::Retry
        && matches!((from, to), (Success, Retrying) | (Retrying, Running) | (Reverted, Retrying)))
}

impl Transitions for Intention {
    /// Intentions move from EXECUTE to what failure handling decides and back to EXECUTE
    /// when a retry resets its subflow. REVERT never turns into RETRY (taskflow bug
    /// 2043808: a parallel branch's RETRY must not undo a REVERT_ALL).
    fn can_transition(self, to: Self) -> bool {
        use Intention::*;
        self == to
            || match self {
                Execute => true,
                Retry => matches!(to, Revert | Execute),
                Revert => matches!(to, Execute),
                Ignore => matches!(to, Execute),
            }
    }
}

/// Whether `from -> to` is allowed, for any state kind.
pub fn can_transition<S: Transitions>(from: S, to: S) -> bool {
    from.can_transition(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in AtomState::ALL {
            assert_eq!(s.as_str().parse::<AtomState>(), Ok(*s));
        }
        for s in FlowState::ALL {
            assert_eq!(s.as_str().parse::<FlowState>(), Ok(*s));
        }
        assert!("NOPE".parse::<Intention>().is_err());
    }

    #[test]
    fn table_matches_taskflow() {
        use AtomState::*;
        assert!(can_transition(Pending, Running));
        assert!(!can_transition(Pending, Reverting));
        assert!(!can_transition(RevertFailure, Pending));
        assert!(!can_transition(RevertFailure, Reverting));
        assert!(!can_transition(Success, Retrying));
        assert!(can_transition_atom(AtomKind::Retry, Success, Retrying));
        assert!(!can_transition(FlowState::Success, FlowState::Reverted));
        assert!(!can_transition(Intention::Revert, Intention::Retry));
    }
}
