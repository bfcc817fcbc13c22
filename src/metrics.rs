//! Counters kept in the state dir (`metrics.json`) across invocations, and
//! their Prometheus text rendering for node_exporter's textfile collector.
//! Each process counts in memory and merges once, under the state lock,
//! with atomic replaces of both files.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::state::{State, write_atomic};

/// Upper bounds (seconds) of the decision-latency histogram's buckets.
pub const DECISION_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Upper bounds (seconds) of the IMDS request-latency histogram's buckets:
/// 1 ms (a cached answer from a healthy IMDS) to 5 s (past any deadline).
pub const IMDS_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How one IMDS request ended: the `outcome` label of
/// `hotplug_hook_imds_request_duration_seconds`, a fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// HTTP 200.
    Ok,
    /// HTTP 404: the key does not exist (a detached ENI's keys).
    Absent,
    /// HTTP 429.
    Throttled,
    /// Any other status (401, 3xx, 5xx...), or no usable answer: connection
    /// refused or reset, a malformed response, a refused body.
    Error,
    /// Connect or read timeout.
    Timeout,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Absent,
        Outcome::Throttled,
        Outcome::Error,
        Outcome::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Absent => "absent",
            Outcome::Throttled => "throttled",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }

    /// From the HTTP status (None: none received), and whether the exchange
    /// timed out.
    pub fn of(status: Option<u16>, timed_out: bool) -> Outcome {
        match status {
            Some(200) => Outcome::Ok,
            Some(404) => Outcome::Absent,
            Some(429) => Outcome::Throttled,
            Some(_) => Outcome::Error,
            None if timed_out => Outcome::Timeout,
            None => Outcome::Error,
        }
    }
}

/// One histogram series: per-bucket (not cumulative) counts over
/// [`IMDS_BUCKETS`] plus +Inf, their sum and count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    fn fix(&mut self) {
        if self.buckets.len() != IMDS_BUCKETS.len() + 1 {
            self.buckets = vec![0; IMDS_BUCKETS.len() + 1];
        }
    }

    pub fn observe(&mut self, seconds: f64) {
        self.fix();
        let i = IMDS_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(IMDS_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        self.fix();
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_seconds += other.sum_seconds;
        self.count += other.count;
    }

    /// Cumulative counts, one per bound plus +Inf (the `_bucket` series).
    pub fn cumulative(&self) -> Vec<u64> {
        let mut total = 0;
        (0..=IMDS_BUCKETS.len())
            .map(|i| {
                total += self.buckets.get(i).copied().unwrap_or(0);
                total
            })
            .collect()
    }

    fn to_json(&self) -> Value {
        let mut h = self.clone();
        h.fix();
        json!({
            "buckets": h.buckets,
            "sum_seconds": self.sum_seconds,
            "count": self.count,
        })
    }

    /// Buckets of another length (another release's bounds) read as zero.
    fn from_value(v: &Value) -> Histogram {
        let buckets: Vec<u64> = v
            .get("buckets")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .filter(|b: &Vec<u64>| b.len() == IMDS_BUCKETS.len() + 1)
            .unwrap_or_default();
        if buckets.is_empty() {
            return Histogram::default();
        }
        Histogram {
            count: buckets.iter().sum(),
            buckets,
            sum_seconds: v.get("sum_seconds").and_then(Value::as_f64).unwrap_or(0.0),
        }
    }
}

/// The `q` quantile (0..1) of the observations in `buckets` (per-bucket
/// counts over [`IMDS_BUCKETS`] plus +Inf), interpolated linearly within
/// its bucket as Prometheus' `histogram_quantile` does; an answer in the
/// +Inf bucket is the highest finite bound. None without observations.
pub fn quantile(q: f64, buckets: &[u64]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        if *n > 0 && (below + n) as f64 >= rank {
            let Some(upper) = IMDS_BUCKETS.get(i) else {
                return IMDS_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { IMDS_BUCKETS[i - 1] };
            return Some(lower + (upper - lower) * (rank - below as f64) / *n as f64);
        }
        below += n;
    }
    IMDS_BUCKETS.last().copied()
}

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
        }
    }

    /// Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut section = |name: &str, kind: &str, help: &str, body: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{body}"
            ));
        };
        section(
            "hotplug_hook_events_total",
            "counter",
            "Net events handled, by action and verdict.",
            labelled(
                "hotplug_hook_events_total",
                &self.events,
                "action",
                Some("verdict"),
            ),
        );
        section(
            "hotplug_hook_reconfigurations_total",
            "counter",
            "Reconfigurations triggered, by backend and result.",
            labelled(
                "hotplug_hook_reconfigurations_total",
                &with_failed(&self.reconfigurations),
                "backend",
                Some("result"),
            ),
        );
        section(
            "hotplug_hook_worker_runs_total",
            "counter",
            "Worker runs, by IMDS confirmation result.",
            labelled(
                "hotplug_hook_worker_runs_total",
                &self.worker_runs,
                "result",
                None,
            ),
        );
        section(
            "hotplug_hook_stranded_jobs_total",
            "counter",
            "Jobs left behind by a worker that died, found past their deadline: reported, not run.",
            format!("hotplug_hook_stranded_jobs_total {}\n", self.stranded_jobs),
        );
        section(
            "hotplug_hook_resumed_jobs_total",
            "counter",
            "Jobs left behind by a worker that died, run by a later worker within their deadline.",
            format!("hotplug_hook_resumed_jobs_total {}\n", self.resumed_jobs),
        );
        let mut hist = String::new();
        let mut cumulative = 0;
        for (i, bound) in DECISION_BUCKETS.iter().enumerate() {
            cumulative += self.decision_buckets.get(i).copied().unwrap_or(0);
            hist.push_str(&format!(
                "hotplug_hook_decision_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}\n"
            ));
        }
        hist.push_str(&format!(
            "hotplug_hook_decision_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             hotplug_hook_decision_duration_seconds_sum {}\n\
             hotplug_hook_decision_duration_seconds_count {}\n",
            self.decision_count, self.decision_seconds_sum, self.decision_count
        ));
        section(
            "hotplug_hook_decision_duration_seconds",
            "histogram",
            "Wall time of handle, from start to verdict and action.",
            hist,
        );
        section(
            "hotplug_hook_imds_requests_total",
            "counter",
            "IMDS requests, by path kind and HTTP status (error: none received).",
            labelled(
                "hotplug_hook_imds_requests_total",
                &self.imds.requests,
                "kind",
                Some("status"),
            ),
        );
        // Every outcome, zeros included: a series that appears only with
        // its first observation hides that observation from rate().
        let mut hist = String::new();
        let name = "hotplug_hook_imds_request_duration_seconds";
        for outcome in Outcome::ALL.map(Outcome::as_str) {
            let h = self.imds.latency.get(outcome).cloned().unwrap_or_default();
            let cumulative = h.cumulative();
            for (i, n) in cumulative.iter().enumerate() {
                let le = IMDS_BUCKETS
                    .get(i)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                hist.push_str(&format!(
                    "{name}_bucket{{outcome=\"{outcome}\",le=\"{le}\"}} {n}\n"
                ));
            }
            hist.push_str(&format!(
                "{name}_sum{{outcome=\"{outcome}\"}} {}\n\
                 {name}_count{{outcome=\"{outcome}\"}} {}\n",
                h.sum_seconds, h.count
            ));
        }
        section(
            name,
            "histogram",
            "Duration of IMDS requests, by outcome (ok: 200, absent: 404, throttled: 429, \
             error: other status or no answer, timeout).",
            hist,
        );
        section(
            "hotplug_hook_imds_throttled_total",
            "counter",
            "IMDS answers with HTTP 429 (throttled).",
            format!(
                "hotplug_hook_imds_throttled_total {}\n",
                self.imds.throttled
            ),
        );
        section(
            "hotplug_hook_imds_cache_hits_total",
            "counter",
            "IMDS answers served from the state dir's cache, by kind.",
            labelled(
                "hotplug_hook_imds_cache_hits_total",
                &self.imds.cache_hits,
                "kind",
                None,
            ),
        );
        section(
            "hotplug_hook_imds_retries_total",
            "counter",
            "IMDS requests retried after throttling or a transient failure.",
            format!("hotplug_hook_imds_retries_total {}\n", self.imds.retries),
        );
        section(
            "hotplug_hook_imds_token_fetches_total",
            "counter",
            "IMDSv2 session tokens fetched.",
            format!(
                "hotplug_hook_imds_token_fetches_total {}\n",
                self.imds.token_fetches
            ),
        );
        out
    }
}

/// Reconfigurations, with a zero `failed` series for every backend seen:
/// the first failure then shows as an increase.
fn with_failed(map: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out = map.clone();
    for k in map.keys() {
        let backend = k.split_once(' ').map_or(k.as_str(), |(b, _)| b);
        out.entry(format!("{backend} failed")).or_default();
    }
    out
}

/// One sample line per map entry; keys hold one label value, or two
/// separated by a space.
fn labelled(name: &str, map: &BTreeMap<String, u64>, l1: &str, l2: Option<&str>) -> String {
    map.iter()
        .map(|(k, v)| match l2 {
            Some(l2) => {
                let (a, b) = k.split_once(' ').unwrap_or((k, ""));
                format!("{name}{{{l1}=\"{}\",{l2}=\"{}\"}} {v}\n", esc(a), esc(b))
            }
            None => format!("{name}{{{l1}=\"{}\"}} {v}\n", esc(k)),
        })
        .collect()
}

/// Escapes a Prometheus label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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

#[cfg(test)]
mod tests;
