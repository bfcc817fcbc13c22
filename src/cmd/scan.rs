//! `hotplug-hook scan`: at boot, before events arrive, record every present
//! NIC (as configured by the boot's own network setup) and resume or report
//! jobs a previous worker left behind.

use anyhow::Result;

use super::update_for;
use crate::config::Config;
use crate::decision::Verdict;
use crate::error::ExitCode;
use crate::event::{self, Action, Event};
use crate::host::sysfs::Sysfs;
use crate::state::State;
use crate::worker;

pub(crate) fn run(cfg: &Config) -> Result<ExitCode> {
    let sysfs = Sysfs::new(&cfg.sysfs_root);
    let state = State::new(&cfg.state_dir);
    state.ensure()?;
    let mut recorded = Vec::new();
    for iface in sysfs.list_interfaces()? {
        let Some(devpath) = sysfs.class_net_devpath(&iface)? else {
            continue;
        };
        if event::is_virtual(&devpath) && !cfg.handle_virtual {
            continue;
        }
        let event = Event {
            action: Action::Add,
            iface: iface.clone(),
            devpath: Some(devpath),
            ifindex: None,
            driver: None,
            seqnum: None,
            iface_old: None,
            from_udev: false,
        };
        let ev = crate::evidence::Gatherer::new(&sysfs, &state, &event)?.snapshot()?;
        if ev.netdev.is_some() {
            let lock = state.lock()?;
            state.apply(&lock, &update_for(&event, &ev, Verdict::AlreadyKnown))?;
            recorded.push(iface);
        }
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
