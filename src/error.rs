//! Exit codes and the one error type that maps to "bad input" (exit 2).

use std::fmt;

/// Handled, whatever the verdict.
pub const EXIT_OK: i32 = 0;
/// Internal failure (I/O we could not do, a bug).
pub const EXIT_FAILURE: i32 = 1;
/// Usage error or invalid input (bad flag, bad INTERFACE/DEVPATH, bad config).
pub const EXIT_USAGE: i32 = 2;
/// The state directory (or a directory in it) is not safe to use: owned by
/// another user, writable by group or others, or not a directory. The event
/// was classified and logged; nothing was written or forwarded.
pub const EXIT_STATE_REFUSED: i32 = 3;
/// The state lock was held by someone else for longer than the hook waits.
pub const EXIT_STATE_BUSY: i32 = 4;

/// A state directory we refuse to use. Maps to exit code 3.
#[derive(Debug)]
pub struct StateRefused(pub String);

impl fmt::Display for StateRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StateRefused {}

/// The state lock could not be had in time. Maps to exit code 4.
#[derive(Debug)]
pub struct StateBusy(pub String);

impl fmt::Display for StateBusy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StateBusy {}

/// Input the user or udev gave us that we refuse. Maps to exit code 2.
#[derive(Debug)]
pub struct InvalidInput(pub String);

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

/// Shorthand for returning an [`InvalidInput`] as an `anyhow::Error`.
pub fn invalid(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InvalidInput(msg.into()))
}

/// The exit code for an error that reached `main`.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<InvalidInput>()) {
        EXIT_USAGE
    } else if err.chain().any(|e| e.is::<StateRefused>()) {
        EXIT_STATE_REFUSED
    } else if err.chain().any(|e| e.is::<StateBusy>()) {
        EXIT_STATE_BUSY
    } else {
        EXIT_FAILURE
    }
}
