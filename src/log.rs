//! Log lines: one concise line per event, to the journal (native protocol,
//! with structured fields), to syslog (`/dev/log`), or to stderr.
//!
//! `auto` picks stderr when stderr is a terminal (a person is watching),
//! else the journal socket if present, else `/dev/log`, else stderr. Under
//! udev a RUN program's stderr only reaches udevd's debug log, which is why
//! the sockets come first there. A message that cannot be sent falls back to
//! stderr. Nothing logged here ever contains an IMDS token: the client never
//! puts it in an error or message.

use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU8, Ordering};

use clap::ValueEnum;

static VERBOSITY: AtomicU8 = AtomicU8::new(0);
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogMode {
    Auto,
    Journal,
    Syslog,
    Stderr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    Stderr,
    Journal(PathBuf),
    Syslog(PathBuf),
}

/// syslog(3) priorities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Err = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

pub fn set_verbosity(level: u8) {
    VERBOSITY.store(level, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSITY.load(Ordering::Relaxed) > 0
}

/// Chooses the sink; before this (or if never called) lines go to stderr.
/// Called first from the defaults and the flags (so a configuration file
/// that cannot be loaded is still logged where udev's lines go), then again
/// with the settings in force.
pub fn init(mode: LogMode, journal_socket: &Path, syslog_socket: &Path) {
    let exists = |p: &Path| std::fs::metadata(p).is_ok();
    let sink = match mode {
        LogMode::Stderr => Sink::Stderr,
        LogMode::Journal => Sink::Journal(journal_socket.into()),
        LogMode::Syslog => Sink::Syslog(syslog_socket.into()),
        LogMode::Auto if std::io::stderr().is_terminal() => Sink::Stderr,
        LogMode::Auto if exists(journal_socket) => Sink::Journal(journal_socket.into()),
        LogMode::Auto if exists(syslog_socket) => Sink::Syslog(syslog_socket.into()),
        LogMode::Auto => Sink::Stderr,
    };
    if let Ok(mut s) = SINK.write() {
        *s = Some(sink);
    }
}

/// True when lines go to stderr (so `main` does not print an error twice).
pub fn to_stderr() -> bool {
    matches!(sink(), None | Some(Sink::Stderr))
}

fn sink() -> Option<Sink> {
    SINK.read().ok().and_then(|s| s.clone())
}

fn stderr_line(msg: &str) {
    // One write per line so lines from parallel invocations do not interleave.
    let line = format!("hotplug-hook: {msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The journal's native datagram: `KEY=value` lines, or the length-prefixed
/// form for values with a newline.
pub fn journal_datagram(priority: Priority, msg: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |key: &str, value: &str| {
        if value.contains('\n') {
            out.extend_from_slice(key.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        } else {
            out.extend_from_slice(format!("{key}={value}\n").as_bytes());
        }
    };
    put("MESSAGE", msg);
    put("PRIORITY", &(priority as u8).to_string());
    put("SYSLOG_IDENTIFIER", "hotplug-hook");
    put("SYSLOG_FACILITY", "3");
    for (k, v) in fields {
        put(k, v);
    }
    out
}

/// An RFC 3164-style line for `/dev/log` (facility daemon); the receiver
/// adds the timestamp.
pub fn syslog_datagram(priority: Priority, msg: &str) -> Vec<u8> {
    let pri = 3 * 8 + priority as u8;
    format!(
        "<{pri}>hotplug-hook[{}]: {}",
        std::process::id(),
        msg.replace('\n', " ")
    )
    .into_bytes()
}

/// Logs a line with structured fields (used by the journal; other sinks
/// show the message only).
pub fn event(priority: Priority, msg: &str, fields: &[(&str, &str)]) {
    if priority == Priority::Debug && !verbose() {
        return;
    }
    let sink = sink();
    let (bytes, path) = match &sink {
        None | Some(Sink::Stderr) => return stderr_line(msg),
        Some(Sink::Journal(p)) => (journal_datagram(priority, msg, fields), p),
        Some(Sink::Syslog(p)) => (syslog_datagram(priority, msg), p),
    };
    // Non-blocking: a stuck or slow log daemon (a full socket queue) must
    // never hold up udev; the line then goes to stderr instead.
    let sent = UnixDatagram::unbound().and_then(|s| {
        s.set_nonblocking(true)?;
        s.send_to(&bytes, path)
    });
    if sent.is_err() {
        stderr_line(msg);
    }
}

pub fn info(msg: &str) {
    event(Priority::Info, msg, &[]);
}

pub fn warn(msg: &str) {
    event(Priority::Warning, &format!("warning: {msg}"), &[]);
}

pub fn error(msg: &str) {
    event(Priority::Err, msg, &[]);
}

pub fn debug(msg: &str) {
    event(Priority::Debug, msg, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_fields_and_multiline_values() {
        let d = journal_datagram(
            Priority::Info,
            "ens5 remove: driver-unload",
            &[("VERDICT", "driver-unload")],
        );
        let text = String::from_utf8(d).unwrap();
        assert!(text.starts_with(
            "MESSAGE=ens5 remove: driver-unload\nPRIORITY=6\nSYSLOG_IDENTIFIER=hotplug-hook\n"
        ));
        assert!(text.ends_with("VERDICT=driver-unload\n"));
        let d = journal_datagram(Priority::Warning, "a\nb", &[]);
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\nPRIORITY=4\n");
        assert!(d.starts_with(&want));
    }

    #[test]
    fn syslog_line() {
        let d = String::from_utf8(syslog_datagram(Priority::Warning, "x\ny")).unwrap();
        assert_eq!(d, format!("<28>hotplug-hook[{}]: x y", std::process::id()));
    }
}
