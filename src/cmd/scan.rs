//! `hotplug-hook scan`: at boot, before events arrive, record every present
//! NIC (as configured by the boot's own network setup) and resume or report
//! jobs a previous worker left behind.

use anyhow::Result;

use super::{present_nics, update_for};
use crate::config::Config;
use crate::decision::Verdict;
use crate::error::ExitCode;
use crate::host::sysfs::Sysfs;
use crate::worker;

pub(crate) fn run(cfg: &Config) -> Result<ExitCode> {
    let sysfs = Sysfs::new(&cfg.sysfs_root);
    let state = cfg.state();
    state.ensure()?;
    let mut recorded = Vec::new();
    for (event, ev) in present_nics(cfg, &sysfs, &state)? {
        let lock = state.lock()?;
        state.apply(&lock, &update_for(&event, &ev, Verdict::AlreadyKnown))?;
        recorded.push(event.iface);
    }
    println!(
        "recorded {} interface{}{}{}",
        recorded.len(),
        if recorded.len() == 1 { "" } else { "s" },
        if recorded.is_empty() { "" } else { ": " },
        recorded.join(", ")
    );
    // Jobs whose worker died: resumed by new workers, or reported.
    let swept = worker::sweep(cfg, worker::Sweep::Dispatch);
    if swept.resumed + swept.stranded > 0 {
        println!(
            "stranded jobs: {} resumed, {} past their deadline (reported, not run)",
            swept.resumed, swept.stranded
        );
    }
    Ok(ExitCode::Ok)
}
