//! hotplug-hook: classify a network-interface uevent from sysfs, kernel module
//! state and its own records, then exit fast or trigger reconfiguration
//! outside udev.
//!
//! Data flows one way: `cli` (flags) → `cmd` (one flow per subcommand) →
//! `settle` → `evidence` (gathering, from `host` and `state`) → `decision`
//! (the only place a verdict is made) → `state::apply` (the only place a
//! record changes) and `actions`/`worker` (reconfiguration outside udev).

pub(crate) mod backend;
pub mod cli;
pub mod clock;
mod cmd;
pub mod config;
pub(crate) mod decision;
pub mod dispatch;
pub mod error;
pub mod event;
pub(crate) mod evidence;
pub(crate) mod host;
pub mod imds;
pub mod jobs;
pub mod log;
pub mod metrics;
pub(crate) mod scope;
pub(crate) mod settle;
pub mod state;
pub mod verdict;
pub(crate) mod worker;

pub use cmd::run;
