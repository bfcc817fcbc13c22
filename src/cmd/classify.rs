//! `hotplug-hook classify`: the same inputs as `handle`, no side effects;
//! prints the verdict, the reasons and every piece of evidence with its
//! source. Run by hand, it may also ask IMDS.

use std::time::Instant;

use anyhow::Result;
use serde_json::Value;

use super::{policy, read_event, report, settle};
use crate::cli::EventArgs;
use crate::config::Config;
use crate::decision::{Decision, Outcome, Verdict, decide};
use crate::error::ExitCode;
use crate::evidence::{Evidence, ImdsEvidence};
use crate::host::sysfs::Sysfs;
use crate::settle::classify;
use crate::state::State;

pub(crate) fn run(cfg: &Config, args: &EventArgs, as_json: bool) -> Result<ExitCode> {
    let start = Instant::now();
    let sysfs = Sysfs::new(&cfg.sysfs_root);
    let state = cfg.state();
    let Some(event) = read_event(&sysfs, &state, args)? else {
        println!("ignored: not a net add/remove/move event");
        return Ok(ExitCode::Ok);
    };
    let (mut ev, mut decision) = classify(&sysfs, &state, &event, &policy(cfg), settle(cfg))?;
    if cfg.imds {
        ask_imds(cfg, &state, &mut ev, &mut decision);
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if as_json {
        let mut out = report(&event, &ev, &decision, ms);
        out["evidence"] = ev.facts_json();
        out["imds"] = ev.imds.as_ref().map_or(Value::Null, ImdsEvidence::to_json);
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::Ok);
    }
    let mut text = format!(
        "{} {}: {}{}\n",
        event.iface,
        event.action.as_str(),
        decision.verdict.as_str(),
        if decision.verdict.triggers_reconfig() {
            " (would reconfigure)"
        } else {
            " (no reconfiguration)"
        }
    );
    text.push_str("reasons:\n");
    for r in &decision.reasons {
        text.push_str(&format!("  - {r}\n"));
    }
    text.push_str("evidence:\n");
    let width = ev.facts.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let vwidth = ev.facts.iter().map(|f| f.value.len()).max().unwrap_or(0);
    for f in &ev.facts {
        text.push_str(&format!(
            "  {:width$}  {:vwidth$}  {}\n",
            f.name, f.value, f.source
        ));
    }
    if let Some(imds) = &ev.imds {
        text.push_str(&format!("imds ({}):\n", imds.mac));
        for r in &imds.requests {
            let outcome = match (r.cached, r.status, &r.error) {
                (true, _, _) => "cached".to_string(),
                (_, Some(s), _) => format!("{s} in {:.1} ms", r.latency_ms),
                (_, None, Some(e)) => format!("{e} after {:.1} ms", r.latency_ms),
                _ => String::new(),
            };
            text.push_str(&format!("  {} {}  {outcome}\n", r.method, r.path));
        }
    }
    text.push_str(&format!("decided in {ms:.2} ms\n"));
    print!("{text}");
    Ok(ExitCode::Ok)
}

/// Adds IMDS evidence where it can change or qualify the verdict
/// (`classify` only: `handle` never calls IMDS), and decides again.
fn ask_imds(cfg: &Config, state: &State, ev: &mut Evidence, decision: &mut Decision) {
    let tiebreak =
        decision.verdict == Verdict::DriverUnbind && ev.settle.as_ref().is_some_and(|s| s.expired);
    if !decision.verdict.triggers_reconfig() && !tiebreak {
        return;
    }
    let Some(mac) = ev.mac().map(str::to_string) else {
        return;
    };
    let sysfs = crate::host::sysfs::Sysfs::new(&cfg.sysfs_root);
    let cloud = crate::host::cloud::metadata_cloud(cfg.cloud, &sysfs);
    let Some(mut client) = crate::imds::client_for(cloud, cfg.imds_settings(), Some(state.clone()))
    else {
        return;
    };
    let presence = if decision.verdict == Verdict::NewDevice {
        client.attached(&mac)
    } else {
        client.detached(&mac)
    };
    crate::metrics::add_imds(state, cfg.metrics_file.as_deref(), client.counters());
    ev.imds = Some(ImdsEvidence {
        mac,
        presence,
        requests: client.log().to_vec(),
    });
    if let Outcome::Decided(d) = decide(ev, &policy(cfg)) {
        *decision = d;
    }
}
