//! Exit codes and the one error type that maps to "bad input" (exit 2).

use std::fmt;

/// Handled, whatever the verdict.
pub const EXIT_OK: i32 = 0;
/// Internal failure (I/O we could not do, a bug).
pub const EXIT_FAILURE: i32 = 1;
/// Usage error or invalid input (bad flag, bad INTERFACE/DEVPATH, bad config).
pub const EXIT_USAGE: i32 = 2;

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
    } else {
        EXIT_FAILURE
    }
}
