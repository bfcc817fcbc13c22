//! `hotplug-hook reconcile [--dry-run]`: catch up on events that never
//! reached the hook (it was not installed yet, cloud-init's socket was not
//! ready, a worker died, udev dropped one). Compares the present NICs, the
//! records and one IMDS listing, forwards what was missed, and resumes
//! stranded jobs. Idempotent: a second run finds nothing to do.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use super::{report, update_for};
use crate::config::Config;
use crate::decision::{self, Decision, Verdict};
use crate::dispatch;
use crate::error::ExitCode;
use crate::event::{self, Action, Event};
use crate::evidence::Evidence;
use crate::host::sysfs::Sysfs;
use crate::imds::{Client, Fetched};
use crate::scope::{InScope, Nic};
use crate::state::{Record, State, now_ms};
use crate::{log, worker};

/// One missed event, with why reconcile thinks so.
struct Missed {
    event: Event,
    evidence: Evidence,
    verdict: Verdict,
    why: String,
}

/// What IMDS lists now; `None` when IMDS is off or could not answer.
fn listing(client: Option<&mut Client>) -> (Option<BTreeSet<String>>, Vec<String>) {
    let Some(client) = client else {
        return (None, vec!["IMDS is off: sysfs alone decides".into()]);
    };
    let macs = client.macs();
    let asked = client.log.iter().filter(|r| !r.cached).count();
    match macs {
        Ok(m) => (
            Some(m.iter().map(|m| m.to_ascii_lowercase()).collect()),
            vec![format!("IMDS lists {} MACs ({asked} requests)", m.len())],
        ),
        Err(e) => (
            None,
            vec![format!(
                "IMDS could not list the MACs ({e:#}): nothing is added or removed this time"
            )],
        ),
    }
}

/// What was missed: present NICs never configured (no record) that IMDS
/// lists, and recorded NICs gone from sysfs that IMDS no longer lists.
fn plan(
    cfg: &Config,
    state: &State,
    present: Vec<(Event, Evidence)>,
    listed: &Option<BTreeSet<String>>,
    client: &mut Option<Client>,
) -> Vec<Missed> {
    let scope = cfg.scope();
    let imds_off = !cfg.imds;
    if listed.is_none() && !imds_off {
        // Without a listing, neither an add nor a removal can be confirmed.
        return Vec::new();
    }
    let is_listed = |mac: &str| {
        listed
            .as_ref()
            .is_some_and(|l| l.contains(&mac.to_ascii_lowercase()))
    };
    let mut missed = Vec::new();
    let mut here: Vec<(String, String)> = Vec::new();
    for (mut event, mut ev) in present {
        let (Some(mac), Some(device)) = (ev.mac().map(str::to_string), ev.device.clone()) else {
            continue;
        };
        here.push((mac.to_ascii_lowercase(), device.clone()));
        let recorded = state
            .records_for_mac(Some(&mac), &device)
            .into_iter()
            .any(|r| r.has_mac(&mac) && r.device() == device);
        if recorded || !(imds_off || is_listed(&mac)) {
            continue;
        }
        // Out of scope: not ours to add. A selector on the device-number
        // costs one request for this NIC (only when one is configured).
        let mut nic = Nic {
            ifname: &event.iface,
            driver: ev.driver.as_deref(),
            mac: Some(&mac),
            device_number: None,
        };
        if scope.judge(&nic) == InScope::NeedsDeviceNumber {
            nic.device_number =
                client
                    .as_mut()
                    .and_then(|c| match c.mac_key(&mac, "device-number") {
                        Ok(Fetched::Found(n)) => n.trim().parse().ok(),
                        _ => None,
                    });
        }
        if let Some(why) = decision::unmanaged_after_imds(&scope, &nic) {
            log::info(&format!("reconcile: not adding {why}"));
            continue;
        }
        event.ifindex = ev.netdev.as_ref().and_then(|n| n.ifindex);
        ev.record = None;
        missed.push(Missed {
            why: format!(
                "{} (MAC {mac}) is present{} and has no record: its add was never handled",
                event.iface,
                if imds_off { "" } else { " and listed in IMDS" }
            ),
            event,
            evidence: ev,
            verdict: Verdict::NewDevice,
        });
    }
    for r in state.records() {
        let Some(mac) = r.mac.clone() else { continue };
        let gone = !here
            .iter()
            .any(|(m, d)| m.eq_ignore_ascii_case(&mac) && d == r.device());
        if !gone || is_listed(&mac) {
            continue;
        }
        let nic = Nic {
            ifname: &r.name,
            driver: r.driver.as_deref(),
            mac: Some(&mac),
            device_number: r.device_number,
        };
        if let Some(why) = decision::unmanaged_after_imds(&scope, &nic) {
            log::info(&format!("reconcile: not removing {why}"));
            continue;
        }
        missed.push(removal(r, &mac, imds_off));
    }
    missed
}

fn removal(r: Record, mac: &str, imds_off: bool) -> Missed {
    let event = Event {
        action: Action::Remove,
        iface: r.name.clone(),
        devpath: Some(r.devpath.clone()),
        ifindex: r.ifindex,
        driver: r.driver.clone(),
        seqnum: None,
        iface_old: None,
        from_udev: false,
    };
    let why = format!(
        "{} (MAC {mac}) is recorded{} but gone from sysfs{}: its removal was never handled",
        r.name,
        r.departed
            .as_ref()
            .map(|d| format!(" as left ({})", d.verdict.as_str()))
            .unwrap_or_default(),
        if imds_off {
            ""
        } else {
            " and no longer listed in IMDS"
        }
    );
    let evidence = Evidence {
        action: Action::Remove,
        iface: r.name.clone(),
        devpath: Some(r.devpath.clone()),
        parent: Some(event::parent_of(&r.devpath).to_string()),
        device: Some(r.device().to_string()),
        event_ifindex: r.ifindex,
        driver: r.driver.clone(),
        record: Some(r),
        ..Evidence::default()
    };
    Missed {
        event,
        evidence,
        verdict: Verdict::DeviceRemoved,
        why,
    }
}

pub(crate) fn run(cfg: &Config, dry_run: bool) -> Result<ExitCode> {
    let sysfs = Sysfs::new(&cfg.sysfs_root);
    let state = cfg.state();
    state.ensure()?;
    let present = super::present_nics(cfg, &sysfs, &state)?;
    let mut client = cfg
        .imds
        .then(|| Client::new(cfg.imds_settings(), Some(state.clone())));
    let (listed, notes) = listing(client.as_mut());
    let missed = plan(cfg, &state, present, &listed, &mut client);
    if let Some(c) = &client {
        crate::metrics::add_imds(&state, cfg.metrics_file.as_deref(), &c.counters);
    }
    for n in &notes {
        println!("{n}");
    }
    if missed.is_empty() {
        println!("nothing missed");
    }
    for m in &missed {
        let what = match m.verdict {
            Verdict::NewDevice => "add",
            _ => "remove",
        };
        println!(
            "{}{what} {}: {}",
            if dry_run { "would " } else { "" },
            m.event.iface,
            m.why
        );
    }
    if dry_run {
        let pending = crate::jobs::pending(&state);
        if !pending.is_empty() {
            println!("would look at {} pending jobs", pending.len());
        }
        return Ok(ExitCode::Ok);
    }
    for m in missed {
        forward(cfg, &state, m);
    }
    let swept = worker::sweep(cfg, worker::Sweep::Dispatch);
    if swept.resumed + swept.stranded > 0 {
        println!(
            "stranded jobs: {} resumed, {} past their deadline (reported, not run)",
            swept.resumed, swept.stranded
        );
    }
    Ok(ExitCode::Ok)
}

/// Hands one missed event to the backend as `handle` would have, records
/// the verdict and journals it.
fn forward(cfg: &Config, state: &State, m: Missed) {
    let start = Instant::now();
    let decision = Decision {
        verdict: m.verdict,
        reasons: vec![m.why.clone()],
    };
    let taken = dispatch::reconfigure(cfg, state, &m.event, &m.evidence, &decision);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let recorded = state.lock().and_then(|lock| {
        state.apply(&lock, &update_for(&m.event, &m.evidence, m.verdict))?;
        let mut entry = report(&m.event, &m.evidence, &decision, ms);
        entry["kind"] = json!("reconcile");
        entry["ts_ms"] = json!(now_ms());
        entry["action_taken"] = taken
            .as_ref()
            .map_or(serde_json::Value::Null, |t| t.to_json());
        state.append_journal(&lock, &entry, cfg.journal_max_bytes)
    });
    if let Err(e) = recorded {
        log::warn(&format!("{e:#}"));
    }
    log::info(&format!(
        "reconcile: {} {}: {} ({}){}",
        m.event.iface,
        m.event.action.as_str(),
        m.verdict.as_str(),
        m.why,
        taken
            .map(|t| format!("; {}", t.describe()))
            .unwrap_or_default()
    ));
}
