//! Failpoints for crash tests: named places where a test makes the process die or a task
//! fail, through the [`fail`] crate.
//!
//! They exist only when the crate is built with the `failpoints` feature (the tests enable
//! it); without it [`hit`] is an empty inline function and [`setup_from_env`] refuses a
//! `FAILPOINTS` variable, so a crash test never passes against a build that cannot crash.
//!
//! The engine evaluates `<flow>.<atom>.before` once the atom's RUNNING state is stored and
//! before `execute` starts, and `<flow>.<atom>.after` once `execute` returned and before its
//! result is stored; `<flow>.<atom>.revert` before a revert. Callers add their own (the
//! hand-offs between processes evaluate `handoff.<flow>.before` and `.after`).
//!
//! `FAILPOINTS="name=action;name=action"` configures them at start, with the `fail`
//! crate's actions. `return` (or `return(abort)`) aborts the process on the spot, like a
//! crash: nothing is flushed, no destructor runs. `panic` inside a task makes the task
//! fail, so its flow reverts. `1*return` fires once; `sleep(ms)`, `pause` and `off` work
//! as the crate documents.

/// Whether this build has failpoints.
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Evaluates the failpoint `name` (built only when failpoints are compiled in).
#[inline(always)]
#[allow(unused_variables)]
pub fn hit(name: impl FnOnce() -> String) {
    #[cfg(feature = "failpoints")]
    {
        let name = name();
        if let Some(arg) = fail::eval(&name, |arg| arg) {
            crash(&name, arg.as_deref());
        }
    }
}

#[cfg(feature = "failpoints")]
fn crash(name: &str, arg: Option<&str>) {
    match arg {
        None | Some("") | Some("abort") => {
            // To stderr directly: the log writer may buffer, and the test reads the reason.
            eprintln!("failpoint {name}: aborting the process");
            std::process::abort();
        }
        Some(other) => {
            eprintln!("failpoint {name}: return({other}) is not an action Ember knows; aborting");
            std::process::abort();
        }
    }
}

/// Configures failpoints from the `FAILPOINTS` variable. Fails on a malformed value, and
/// when the variable is set on a build without failpoints.
pub fn setup_from_env() -> Result<usize, String> {
    let Ok(spec) = std::env::var("FAILPOINTS") else { return Ok(0) };
    if spec.trim().is_empty() {
        return Ok(0);
    }
    configure(&spec)
}

/// Configures failpoints from `name=action;name=action`; returns how many were set.
pub fn configure(spec: &str) -> Result<usize, String> {
    if !ENABLED {
        return Err(format!(
            "FAILPOINTS={spec:?} is set but this build has no failpoints (build with the `failpoints` feature)"
        ));
    }
    let mut n = 0;
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, actions) =
            entry.split_once('=').ok_or_else(|| format!("failpoint {entry:?}: expected name=action"))?;
        set(name.trim(), actions.trim())?;
        n += 1;
    }
    Ok(n)
}

#[cfg(feature = "failpoints")]
fn set(name: &str, actions: &str) -> Result<(), String> {
    fail::cfg(name, actions).map_err(|e| format!("failpoint {name}: {e}"))
}

#[cfg(not(feature = "failpoints"))]
fn set(_name: &str, _actions: &str) -> Result<(), String> {
    Ok(())
}

/// Removes every configured failpoint (tests).
pub fn clear() {
    #[cfg(feature = "failpoints")]
    for (name, _) in fail::list() {
        fail::remove(name);
    }
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_spec_is_refused() {
        assert!(configure("no-equals-sign").is_err());
        assert!(configure("x.before=bogus(").is_err());
    }
}
