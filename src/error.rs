//! Exit codes, and the error types that map to them.

use std::fmt;

/// How the process ends; `man hotplug-hook` lists the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Handled, whatever the verdict (ignored events and failed
    /// reconfigurations included: those are logged).
    Ok = 0,
    /// Internal failure (I/O we could not do, a bug).
    Failure = 1,
    /// Usage error or invalid input (bad flag, bad INTERFACE/DEVPATH, bad
    /// config); nothing was written.
    Usage = 2,
    /// The state directory (or a directory in it) is not safe to use: owned
    /// by another user, writable by group or others, or not a directory. The
    /// event was classified and logged; nothing was written or forwarded.
    StateRefused = 3,
    /// The state lock was held by someone else for longer than the hook
    /// waits.
    StateBusy = 4,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}

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
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|e| e.is::<InvalidInput>()) {
        ExitCode::Usage
    } else if err.chain().any(|e| e.is::<StateRefused>()) {
        ExitCode::StateRefused
    } else if err.chain().any(|e| e.is::<StateBusy>()) {
        ExitCode::StateBusy
    } else {
        ExitCode::Failure
    }
}

/// How many characters of an outside value a message quotes at most.
pub const QUOTE_MAX: usize = 64;

/// A value from outside (udev, sysfs, IMDS, a file) as a message may show
/// it: at most its first [`QUOTE_MAX`] characters, escaped (`{:?}`), with
/// `…` after the closing quote when it was cut. Never the whole of a value
/// that could be megabytes long, never a raw control character.
pub fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}

/// [`quote`] for bytes that may not be UTF-8 (invalid sequences are shown
/// as U+FFFD).
pub fn quote_bytes(b: &[u8]) -> String {
    // Never convert more than needed: 4 bytes per character at most.
    let head = &b[..b.len().min(QUOTE_MAX * 4 + 4)];
    let s = String::from_utf8_lossy(head);
    let q = quote(&s);
    if head.len() < b.len() && !q.ends_with('…') {
        format!("{q}…")
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_and_escaped() {
        assert_eq!(quote("ens5"), "\"ens5\"");
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(1 << 20);
        let q = quote(&long);
        assert_eq!(q, format!("\"{}\"…", "x".repeat(QUOTE_MAX)));
        assert_eq!(
            quote(&"é".repeat(QUOTE_MAX)),
            format!("{:?}", "é".repeat(QUOTE_MAX))
        );
        assert!(quote(&"é".repeat(QUOTE_MAX + 1)).ends_with('…'));
        assert!(quote_bytes(&vec![b'a'; 1 << 20]).len() < 80);
        assert_eq!(quote_bytes(b"\xff1"), "\"\u{fffd}1\"");
    }
}
