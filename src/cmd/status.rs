//! `hotplug-hook status`: counters, pending jobs and the last journal
//! entries, for people (`--json` for machines).

use anyhow::Result;
use serde_json::json;

use crate::config::Config;
use crate::error::ExitCode;
use crate::state::State;

pub(crate) fn run(cfg: &Config, entries: usize, as_json: bool) -> Result<ExitCode> {
    let state = State::new(&cfg.state_dir);
    let m = crate::metrics::load(&state);
    let journal = state.journal_tail(entries);
    let pending = crate::jobs::pending(&state);
    let count = |held: Option<bool>| pending.iter().filter(|p| p.held == held).count();
    let (running, stranded, unknown) = (count(Some(true)), count(Some(false)), count(None));
    if as_json {
        let now = crate::clock::boot_ms();
        let out = json!({
            "state_dir": cfg.state_dir,
            "metrics": m.to_json(),
            "jobs": {
                "pending": pending.len(),
                "running": running,
                "stranded": stranded,
                "unknown": unknown,
                "list": pending.iter().map(|p| p.to_json(cfg, now)).collect::<Vec<_>>(),
            },
            "journal": journal,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::Ok);
    }
    let mut text = format!("state dir: {}\n", cfg.state_dir.display());
    text.push_str(&format!(
        "jobs pending: {}{}\n",
        pending.len(),
        if pending.is_empty() {
            String::new()
        } else {
            format!(
                " ({running} held by a running worker, {stranded} stranded{})",
                if unknown > 0 {
                    format!(", {unknown} unreadable")
                } else {
                    String::new()
                }
            )
        }
    ));
    for p in pending.iter().filter(|p| p.held != Some(true)) {
        let what = p.job.as_ref().map_or_else(
            || p.error.clone().unwrap_or_default(),
            |j| format!("{} {}: {}", j.iface, j.action.as_str(), j.verdict.as_str()),
        );
        let state = if p.held.is_some() {
            "stranded"
        } else {
            "unreadable"
        };
        text.push_str(&format!("  {state} {}: {what}\n", p.id));
    }
    if m.stranded_jobs + m.resumed_jobs > 0 {
        text.push_str(&format!(
            "stranded jobs: {} resumed, {} past their deadline (reported, not run)\n",
            m.resumed_jobs, m.stranded_jobs
        ));
    }
    let list = |text: &mut String, title: &str, map: &std::collections::BTreeMap<String, u64>| {
        text.push_str(&format!(
            "{title}:{}\n",
            if map.is_empty() { " none" } else { "" }
        ));
        for (k, v) in map {
            text.push_str(&format!("  {v:>6}  {k}\n"));
        }
    };
    list(&mut text, "events (action verdict)", &m.events);
    if m.decision_count > 0 {
        text.push_str(&format!(
            "decision time: {:.2} ms mean over {} events\n",
            m.decision_seconds_sum * 1000.0 / m.decision_count as f64,
            m.decision_count
        ));
    }
    list(
        &mut text,
        "reconfigurations (backend result)",
        &m.reconfigurations,
    );
    list(&mut text, "worker IMDS confirmations", &m.worker_runs);
    list(&mut text, "IMDS requests (kind status)", &m.imds.requests);
    if m.imds.latency_count > 0 {
        text.push_str(&format!(
            "IMDS latency: {:.1} ms mean over {} requests; {} retries, {} token fetches\n",
            m.imds.latency_ms_sum / m.imds.latency_count as f64,
            m.imds.latency_count,
            m.imds.retries,
            m.imds.token_fetches
        ));
    }
    list(&mut text, "IMDS cache hits", &m.imds.cache_hits);
    text.push_str(&format!("last {} journal entries:\n", journal.len()));
    for e in &journal {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        text.push_str(&format!(
            "  {} {} {} {}: {}{}{}\n",
            e["ts_ms"].as_u64().unwrap_or(0),
            s("kind"),
            s("iface"),
            s("action"),
            s("verdict"),
            e["action_taken"]["result"]
                .as_str()
                .map(|r| format!(
                    " ({} {r})",
                    e["action_taken"]["backend"].as_str().unwrap_or("")
                ))
                .unwrap_or_default(),
            match e["result"].as_str() {
                Some(r @ ("stranded" | "cancelled")) => format!(" [job {} {r}]", s("job")),
                _ if e["resumed"] == true => format!(" [job {} resumed]", s("job")),
                _ => String::new(),
            }
        ));
    }
    print!("{text}");
    Ok(ExitCode::Ok)
}
