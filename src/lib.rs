//! hotplug-hook: classify a network-interface uevent from sysfs, kernel module
//! state and its own records, then exit fast or trigger reconfiguration
//! outside udev.
//!
//! I/O lives at the edges (`sysfs`, `state`, `actions`, `worker`); the
//! classification in [`decision`] is a pure function of [`evidence::Evidence`].

pub mod actions;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decision;
pub mod error;
pub mod event;
pub mod evidence;
pub mod imds;
pub mod log;
pub mod metrics;
pub mod module;
pub mod state;
pub mod sysfs;
pub mod verdict;
pub mod worker;
