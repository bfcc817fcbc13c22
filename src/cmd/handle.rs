//! `hotplug-hook handle`: one udev event, in udev's RUN context. Reads
//! sysfs and the records, decides, hands reconfiguration to a worker, records
//! and logs the verdict, and exits in milliseconds.

use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use super::{policy, read_event, report, settle, update_for};
use crate::backend::Taken;
use crate::cli::EventArgs;
use crate::config::Config;
use crate::decision::Decision;
use crate::dispatch;
use crate::error::{ExitCode, StateBusy, StateRefused};
use crate::event::Event;
use crate::evidence::Evidence;
use crate::host::sysfs::Sysfs;
use crate::log;
use crate::settle::classify;
use crate::state::{State, now_ms};

pub(crate) fn run(cfg: &Config, args: &EventArgs) -> Result<ExitCode> {
    let start = Instant::now();
    let sysfs = Sysfs::new(&cfg.sysfs_root);
    let state = cfg.state();
    let Some(event) = read_event(&sysfs, &state, args)? else {
        return Ok(ExitCode::Ok);
    };
    let (ev, decision) = classify(&sysfs, &state, &event, &policy(cfg), settle(cfg))?;
    // A state dir we refuse (another user's, or writable by others): the
    // verdict is still logged, but nothing is written or forwarded.
    let refused = match state.ensure() {
        Err(e) if e.is::<StateRefused>() => Some(e),
        _ => None,
    };
    let taken = match refused {
        None => dispatch::reconfigure(cfg, &state, &event, &ev, &decision),
        Some(_) => None,
    };
    let ms = start.elapsed().as_secs_f64() * 1000.0;

    // State is best effort: a read-only or full state dir must not turn a
    // handled event into a failure; a refused or held one must be seen.
    let failed = match refused {
        Some(e) => Some(e),
        None => match remember(cfg, &state, &event, &ev, &decision, taken.as_ref(), ms) {
            Err(e) if e.is::<StateBusy>() => Some(e),
            Err(e) => {
                log::warn(&format!("{e:#}"));
                None
            }
            Ok(()) => None,
        },
    };
    let action_note = match (&taken, &failed) {
        (_, Some(e)) => format!("; not recorded: {e:#}"),
        (Some(t), None) => format!("; {}", t.describe()),
        (None, None) => String::new(),
    };
    let duration = format!("{ms:.3}");
    let seqnum = event.seqnum.map(|s| s.to_string()).unwrap_or_default();
    log::event(
        log::Priority::Info,
        &format!(
            "{} {}: {} ({}) in {ms:.1} ms{action_note}",
            event.iface,
            event.action.as_str(),
            decision.verdict.as_str(),
            decision.reasons.last().map_or("", String::as_str),
        ),
        &[
            ("INTERFACE", &event.iface),
            ("ACTION", event.action.as_str()),
            ("VERDICT", decision.verdict.as_str()),
            ("MAC", ev.mac().unwrap_or("")),
            ("DEVPATH", ev.devpath.as_deref().unwrap_or("")),
            ("SEQNUM", &seqnum),
            ("DURATION_MS", &duration),
        ],
    );
    match failed {
        Some(e) => Err(e),
        None => Ok(ExitCode::Ok),
    }
}

/// Updates the interface records and appends the journal entry, under the lock.
fn remember(
    cfg: &Config,
    state: &State,
    event: &Event,
    ev: &Evidence,
    decision: &Decision,
    taken: Option<&Taken>,
    ms: f64,
) -> Result<()> {
    state.ensure()?;
    let lock = state.lock()?;
    let v = decision.verdict;
    let result = state.apply(&lock, &update_for(event, ev, v));
    let mut entry = report(event, ev, decision, ms);
    entry["kind"] = json!("event");
    entry["ts_ms"] = json!(now_ms());
    entry["action_taken"] = taken.map_or(Value::Null, Taken::to_json);
    if let Err(e) = &result {
        entry["state_error"] = json!(format!("{e:#}"));
    }
    state.append_journal(&lock, &entry, cfg.journal_max_bytes)?;
    // The counters have a lock of their own: the state lock is held only
    // for the record and the journal line. Counters are best effort.
    drop(lock);
    let counted = crate::metrics::update(state, cfg.metrics_file.as_deref(), |m| {
        m.event(event.action.as_str(), v.as_str(), ms / 1000.0);
        if let Some(c) = ev.cloud {
            m.cloud = Some(c.as_str().to_string());
        }
        if let Some(t) = taken {
            m.reconfiguration(t.backend.as_str(), t.result.as_str());
        }
    });
    if let Err(e) = counted {
        log::warn(&format!("{e:#}"));
    }
    result
}
