//! Log lines. One concise line per event; `-v` adds detail.
//!
//! Under udev, a RUN program's stderr goes to udevd's own log.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

static VERBOSITY: AtomicU8 = AtomicU8::new(0);

pub fn set_verbosity(level: u8) {
    VERBOSITY.store(level, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSITY.load(Ordering::Relaxed) > 0
}

fn emit(msg: &str) {
    // One write per line so lines from parallel invocations do not interleave.
    let line = format!("hotplug-hook: {msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn info(msg: &str) {
    emit(msg);
}

pub fn warn(msg: &str) {
    emit(&format!("warning: {msg}"));
}

pub fn debug(msg: &str) {
    if verbose() {
        emit(msg);
    }
}
