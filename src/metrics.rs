//! Counters kept in the state dir (`metrics.json`) across invocations, and
//! their Prometheus text rendering for node_exporter's textfile collector.
//! Each process counts in memory and merges once, under the state lock,
//! with atomic replaces of both files.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::state::{State, write_atomic};

/// Counters of IMDS use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImdsCounters {
    /// Requests by `"<kind> <status>"`, e.g. `"token 200"`, `"macs 429"`,
    /// `"mac-key error"` (no HTTP status: reset, timeout, refused).
    pub requests: BTreeMap<String, u64>,
    /// Total time and number of requests, all outcomes (kept from the
    /// release that had no histogram).
    pub latency_ms_sum: f64,
    pub latency_count: u64,
    /// Request durations by [`Outcome`] name.
    pub latency: BTreeMap<String, Histogram>,
    /// HTTP 429 answers.
    pub throttled: u64,
    /// Served from the state dir's cache, by kind (`token`, `macs`).
    pub cache_hits: BTreeMap<String, u64>,
    pub retries: u64,
    pub token_fetches: u64,
}

/// Everything counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Events handled by `"<action> <verdict>"`.
    pub events: BTreeMap<String, u64>,
    /// Reconfigurations by `"<backend> <result>"`.
    pub reconfigurations: BTreeMap<String, u64>,
    /// Worker outcomes by IMDS result (`agreed`, `no-action`, `gave-up`).
    pub worker_runs: BTreeMap<String, u64>,
    /// Jobs whose worker died, found past their deadline: reported, not run.
    pub stranded_jobs: u64,
    /// Jobs whose worker died, run by a later worker within their deadline.
    pub resumed_jobs: u64,
    /// Per-bucket (not cumulative) counts of `handle` durations, plus +Inf.
    pub decision_buckets: Vec<u64>,
    pub decision_seconds_sum: f64,
    pub decision_count: u64,
    pub imds: ImdsCounters,
    /// The cloud the last event was handled in (`ec2`, `azure`, `gce`,
    /// `none`): the label of `hotplug_hook_info`.
    pub cloud: Option<String>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: String, n: u64) {
    *map.entry(key).or_default() += n;
}

fn map_json(v: &Value, k: &str) -> BTreeMap<String, u64> {
    v.get(k)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

impl ImdsCounters {
    pub fn is_empty(&self) -> bool {
        *self == ImdsCounters::default()
    }

    /// Counts one request of path `kind` that got `status` (None: no
    /// answer; `timed_out` tells a timeout from other failures) in
    /// `latency_ms`.
    pub fn request(&mut self, kind: &str, status: Option<u16>, timed_out: bool, latency_ms: f64) {
        let outcome = Outcome::of(status, timed_out);
        let label = status.map_or("error".to_string(), |s| s.to_string());
        bump(&mut self.requests, format!("{kind} {label}"), 1);
        self.latency_ms_sum += latency_ms;
        self.latency_count += 1;
        self.latency
            .entry(outcome.as_str().to_string())
            .or_default()
            .observe(latency_ms / 1000.0);
        if outcome == Outcome::Throttled {
            self.throttled += 1;
        }
    }

    /// Per-bucket counts of all outcomes together.
    pub fn latency_buckets(&self) -> Vec<u64> {
        let mut all = Histogram::default();
        for h in self.latency.values() {
            all.merge(h);
        }
        all.fix();
        all.buckets
    }

    pub fn cache_hit(&mut self, kind: &str) {
        bump(&mut self.cache_hits, kind.to_string(), 1);
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn merge(&mut self, other: &ImdsCounters) {
        for (k, v) in &other.requests {
            bump(&mut self.requests, k.clone(), *v);
        }
        for (k, v) in &other.cache_hits {
            bump(&mut self.cache_hits, k.clone(), *v);
        }
        for (k, h) in &other.latency {
            self.latency.entry(k.clone()).or_default().merge(h);
        }
        self.latency_ms_sum += other.latency_ms_sum;
        self.latency_count += other.latency_count;
        self.throttled += other.throttled;
        self.retries += other.retries;
        self.token_fetches += other.token_fetches;
    }

    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "latency_ms_sum": (self.latency_ms_sum * 1000.0).round() / 1000.0,
            "latency_count": self.latency_count,
            "latency": self
                .latency
                .iter()
                .map(|(k, h)| (k.clone(), h.to_json()))
                .collect::<serde_json::Map<_, _>>(),
            "throttled": self.throttled,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "token_fetches": self.token_fetches,
        })
    }

    pub fn from_value(v: &Value) -> ImdsCounters {
        ImdsCounters {
            requests: map_json(v, "requests"),
            latency_ms_sum: v
                .get("latency_ms_sum")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            latency_count: v.get("latency_count").and_then(Value::as_u64).unwrap_or(0),
            // A file from before the histogram has none: zero buckets.
            latency: v
                .get("latency")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, h)| (k.clone(), Histogram::from_value(h)))
                        .filter(|(_, h)| h.count > 0)
                        .collect()
                })
                .unwrap_or_default(),
            throttled: v.get("throttled").and_then(Value::as_u64).unwrap_or(0),
            cache_hits: map_json(v, "cache_hits"),
            retries: v.get("retries").and_then(Value::as_u64).unwrap_or(0),
            token_fetches: v.get("token_fetches").and_then(Value::as_u64).unwrap_or(0),
        }
    }
}

impl Metrics {
    pub fn event(&mut self, action: &str, verdict: &str, seconds: f64) {
        bump(&mut self.events, format!("{action} {verdict}"), 1);
        if self.decision_buckets.len() != DECISION_BUCKETS.len() + 1 {
            self.decision_buckets = vec![0; DECISION_BUCKETS.len() + 1];
        }
        let i = DECISION_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(DECISION_BUCKETS.len());
        self.decision_buckets[i] += 1;
        self.decision_seconds_sum += seconds;
        self.decision_count += 1;
    }

    pub fn reconfiguration(&mut self, backend: &str, result: &str) {
        bump(&mut self.reconfigurations, format!("{backend} {result}"), 1);
    }

    pub fn worker_run(&mut self, result: &str) {
        bump(&mut self.worker_runs, result.to_string(), 1);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "events": self.events,
            "reconfigurations": self.reconfigurations,
            "worker_runs": self.worker_runs,
            "stranded_jobs": self.stranded_jobs,
            "resumed_jobs": self.resumed_jobs,
            "decision_buckets": self.decision_buckets,
            "decision_seconds_sum": self.decision_seconds_sum,
            "decision_count": self.decision_count,
            "imds": self.imds.to_json(),
            "cloud": self.cloud,
        })
    }

    /// Parses the stored counters; anything malformed reads as zero.
    pub fn from_json(text: &str) -> Metrics {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return Metrics::default();
        };
        let buckets: Vec<u64> = v
            .get("decision_buckets")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .filter(|b: &Vec<u64>| b.len() == DECISION_BUCKETS.len() + 1)
            .unwrap_or_default();
        Metrics {
            events: map_json(&v, "events"),
            reconfigurations: map_json(&v, "reconfigurations"),
            worker_runs: map_json(&v, "worker_runs"),
            stranded_jobs: v.get("stranded_jobs").and_then(Value::as_u64).unwrap_or(0),
            resumed_jobs: v.get("resumed_jobs").and_then(Value::as_u64).unwrap_or(0),
            decision_buckets: buckets,
            decision_seconds_sum: v
                .get("decision_seconds_sum")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            decision_count: v.get("decision_count").and_then(Value::as_u64).unwrap_or(0),
            imds: v
                .get("imds")
                .map(ImdsCounters::from_value)
                .unwrap_or_default(),
            cloud: v
                .get("cloud")
                .and_then(Value::as_str)
                .and_then(crate::host::cloud::Cloud::parse)
                .map(|c| c.as_str().to_string()),
        }
    }
}

const FILE: &str = "metrics.json";
/// The counters file is a few KiB (its maps are keyed by action, verdict,
/// backend, result and IMDS status); anything larger is not ours.
const MAX_BYTES: u64 = 1 << 20;

/// The counters stored in the state dir.
pub fn load(state: &State) -> Metrics {
    crate::state::read_state_file(&state.dir().join(FILE), MAX_BYTES)
        .map(|t| Metrics::from_json(&t))
        .unwrap_or_default()
}

/// Applies `f` to the stored counters; the caller holds the state lock.
/// Rewrites the Prometheus file too when one is configured.
/// Loads, changes and writes back the counters under their own lock
/// (`metrics.lock`, not the state lock: a burst of events holds the state
/// lock only for records and journal lines).
pub fn update(state: &State, prom: Option<&Path>, f: impl FnOnce(&mut Metrics)) -> Result<()> {
    state.ensure()?;
    let _lock = state.lock_named("metrics.lock")?;
    let mut m = load(state);
    f(&mut m);
    write_atomic(
        &state.dir().join(FILE),
        m.to_json().to_string().as_bytes(),
        crate::state::FILE_MODE,
    )?;
    // The Prometheus textfile lives outside the state dir and is read by
    // node_exporter, which does not run as root.
    if let Some(p) = prom {
        write_atomic(p, m.to_prometheus().as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Adds one IMDS client's counters to the state dir's (the client itself
/// writes nothing).
pub fn add_imds(state: &State, prom: Option<&Path>, counters: &ImdsCounters) {
    if counters.is_empty() {
        return;
    }
    if let Err(e) = update(state, prom, |m| m.imds.merge(counters)) {
        crate::log::warn(&format!("failed to save IMDS counters: {e:#}"));
    }
}

mod histogram;
mod prometheus;

pub use histogram::*;

#[cfg(test)]
mod tests;
