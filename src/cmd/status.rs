//! `hotplug-hook status`: counters, pending jobs and the last journal
//! entries, for people (`--json` for machines).

use anyhow::Result;
use serde_json::{Value, json};

use crate::config::Config;
use crate::error::ExitCode;
use crate::metrics::{IMDS_BUCKETS, ImdsCounters, Outcome, quantile};
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
            "imds_latency": imds_latency_json(&m.imds),
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
            "IMDS latency: {:.1} ms mean over {} requests; {} throttled (429), {} retries, \
             {} token fetches\n",
            m.imds.latency_ms_sum / m.imds.latency_count as f64,
            m.imds.latency_count,
            m.imds.throttled,
            m.imds.retries,
            m.imds.token_fetches
        ));
    }
    imds_latency_text(&mut text, &m.imds);
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

/// The IMDS latency histogram as `status --json` gives it: bucket bounds,
/// cumulative counts by outcome (the textfile's `_bucket` series) and
/// quantile estimates over all outcomes.
fn imds_latency_json(c: &ImdsCounters) -> Value {
    let all = c.latency_buckets();
    let outcomes: serde_json::Map<String, Value> = Outcome::ALL
        .iter()
        .map(|o| {
            let h = c.latency.get(o.as_str()).cloned().unwrap_or_default();
            let v = json!({
                "cumulative": h.cumulative(),
                "sum_seconds": h.sum_seconds,
                "count": h.count,
            });
            (o.as_str().to_string(), v)
        })
        .collect();
    json!({
        "le": IMDS_BUCKETS.iter().map(|b| json!(b)).chain([json!("+Inf")]).collect::<Vec<_>>(),
        "by_outcome": outcomes,
        "count": all.iter().sum::<u64>(),
        "p50_seconds": quantile(0.5, &all),
        "p99_seconds": quantile(0.99, &all),
    })
}

/// One line of quantile estimates and counts by outcome, when there are any.
fn imds_latency_text(text: &mut String, c: &ImdsCounters) {
    let all = c.latency_buckets();
    let (Some(p50), Some(p99)) = (quantile(0.5, &all), quantile(0.99, &all)) else {
        return;
    };
    let counts: Vec<String> = Outcome::ALL
        .iter()
        .map(|o| {
            let n = c.latency.get(o.as_str()).map_or(0, |h| h.count);
            format!("{} {n}", o.as_str())
        })
        .collect();
    text.push_str(&format!(
        "IMDS latency histogram: p50 ~{:.1} ms, p99 ~{:.1} ms (estimated from buckets); {}\n",
        p50 * 1000.0,
        p99 * 1000.0,
        counts.join(", ")
    ));
}
