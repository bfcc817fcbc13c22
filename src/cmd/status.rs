//! `hotplug-hook status`: counters, pending jobs and the last journal
//! entries, for people (`--json` for machines: there the journal entries are
//! as stored, `ts_ms` in milliseconds since the epoch).

use anyhow::Result;
use serde_json::{Value, json};

use crate::config::Config;
use crate::error::ExitCode;
use crate::metrics::{IMDS_BUCKETS, ImdsCounters, Outcome, quantile};

pub(crate) fn run(cfg: &Config, entries: usize, as_json: bool) -> Result<ExitCode> {
    let state = cfg.state();
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
    let now_ms = crate::state::now_ms();
    text.push_str(&format!(
        "last {} journal entries (local time{}):\n",
        journal.len(),
        local_time(now_ms / 1000).map_or(String::new(), |t| format!(", {}", t.zone()))
    ));
    for e in &journal {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        text.push_str(&format!(
            "  {} {} {} {}: {}{}{}\n",
            when(e["ts_ms"].as_u64(), now_ms),
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

/// A journal entry's wall-clock time for people: local date and time to the
/// second, and how long ago (`2026-11-29 13:54:04 (12 s ago)`). A time ahead
/// of now (the clock was stepped back) gets no age; a missing one is `-`.
fn when(ts_ms: Option<u64>, now_ms: u64) -> String {
    let Some(ts_ms) = ts_ms.filter(|&t| t > 0) else {
        return "-".to_string();
    };
    let at = local_time(ts_ms / 1000).map_or_else(|| format!("@{}", ts_ms / 1000), |t| t.stamp());
    match now_ms.checked_sub(ts_ms) {
        Some(age) => format!("{at} ({} ago)", ago(age / 1000)),
        None => at,
    }
}

/// `12 s`, `5 min`, `3 h 20 min`, `2 d 4 h`: the two largest units.
fn ago(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => match (secs / 3600, secs % 3600 / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
        _ => match (secs / 86400, secs % 86400 / 3600) {
            (d, 0) => format!("{d} d"),
            (d, h) => format!("{d} d {h} h"),
        },
    }
}

/// Broken-down local time (the `TZ` variable, else `/etc/localtime`).
struct LocalTime(nix::libc::tm);

impl LocalTime {
    /// `2026-11-29 13:54:04`.
    fn stamp(&self) -> String {
        let t = &self.0;
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            i64::from(t.tm_year) + 1900,
            t.tm_mon + 1,
            t.tm_mday,
            t.tm_hour,
            t.tm_min,
            t.tm_sec
        )
    }

    /// `UTC`, or the offset from it: `UTC+01:00`.
    fn zone(&self) -> String {
        let off = self.0.tm_gmtoff;
        if off == 0 {
            return "UTC".to_string();
        }
        let sign = if off < 0 { '-' } else { '+' };
        let off = off.unsigned_abs();
        format!("UTC{sign}{:02}:{:02}", off / 3600, off % 3600 / 60)
    }
}

fn local_time(secs: u64) -> Option<LocalTime> {
    let secs = nix::libc::time_t::try_from(secs).ok()?;
    // SAFETY: localtime_r only writes the `tm` it is given (zeroed, valid
    // for every field) and reads `secs`; it is the thread-safe variant.
    let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
    let done = unsafe { nix::libc::localtime_r(&secs, &mut tm) };
    (!done.is_null()).then_some(LocalTime(tm))
}

#[cfg(test)]
mod tests;
