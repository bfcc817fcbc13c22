//! IMDS counters, kept in the state dir (`imds-metrics.json`) across
//! invocations. Each process counts in memory and merges once at the end,
//! under the state lock, with an atomic replace.

use std::collections::BTreeMap;
use std::fs;

use anyhow::Result;
use serde_json::{Value, json};

use crate::state::{State, write_atomic};

/// Counters of IMDS use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImdsCounters {
    /// Requests by `"<kind> <status>"`, e.g. `"token 200"`, `"macs 429"`,
    /// `"mac-key error"` (no HTTP status: reset, timeout, refused).
    pub requests: BTreeMap<String, u64>,
    pub latency_ms_sum: f64,
    pub latency_count: u64,
    /// Served from the state dir's cache, by kind (`token`, `macs`).
    pub cache_hits: BTreeMap<String, u64>,
    pub retries: u64,
    pub token_fetches: u64,
}

impl ImdsCounters {
    pub fn is_empty(&self) -> bool {
        *self == ImdsCounters::default()
    }

    pub fn request(&mut self, kind: &str, status: Option<u16>, latency_ms: f64) {
        let status = status.map_or("error".to_string(), |s| s.to_string());
        *self.requests.entry(format!("{kind} {status}")).or_default() += 1;
        self.latency_ms_sum += latency_ms;
        self.latency_count += 1;
    }

    pub fn cache_hit(&mut self, kind: &str) {
        *self.cache_hits.entry(kind.to_string()).or_default() += 1;
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn merge(&mut self, other: &ImdsCounters) {
        for (k, v) in &other.requests {
            *self.requests.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.cache_hits {
            *self.cache_hits.entry(k.clone()).or_default() += v;
        }
        self.latency_ms_sum += other.latency_ms_sum;
        self.latency_count += other.latency_count;
        self.retries += other.retries;
        self.token_fetches += other.token_fetches;
    }

    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "latency_ms_sum": (self.latency_ms_sum * 1000.0).round() / 1000.0,
            "latency_count": self.latency_count,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "token_fetches": self.token_fetches,
        })
    }

    /// Parses the stored counters; anything malformed reads as zero.
    pub fn from_json(text: &str) -> ImdsCounters {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return ImdsCounters::default();
        };
        let map = |k: &str| -> BTreeMap<String, u64> {
            v.get(k)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        ImdsCounters {
            requests: map("requests"),
            latency_ms_sum: v
                .get("latency_ms_sum")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            latency_count: v.get("latency_count").and_then(Value::as_u64).unwrap_or(0),
            cache_hits: map("cache_hits"),
            retries: v.get("retries").and_then(Value::as_u64).unwrap_or(0),
            token_fetches: v.get("token_fetches").and_then(Value::as_u64).unwrap_or(0),
        }
    }
}

const FILE: &str = "imds-metrics.json";

/// The counters stored in the state dir.
pub fn load(state: &State) -> ImdsCounters {
    fs::read_to_string(state.dir().join(FILE))
        .map(|t| ImdsCounters::from_json(&t))
        .unwrap_or_default()
}

/// Adds `delta` to the stored counters.
pub fn add(state: &State, delta: &ImdsCounters) -> Result<()> {
    if delta.is_empty() {
        return Ok(());
    }
    state.ensure()?;
    let _lock = state.lock()?;
    let mut total = load(state);
    total.merge(delta);
    let text = serde_json::to_string(&total.to_json())?;
    write_atomic(&state.dir().join(FILE), text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_and_merge() {
        let mut a = ImdsCounters::default();
        a.request("token", Some(200), 1.5);
        a.request("macs", None, 2.0);
        a.cache_hit("token");
        a.retries = 2;
        a.token_fetches = 1;
        let b = ImdsCounters::from_json(&a.to_json().to_string());
        assert_eq!(a, b);
        let mut c = b.clone();
        c.merge(&a);
        assert_eq!(c.requests["token 200"], 2);
        assert_eq!(c.requests["macs error"], 2);
        assert_eq!(c.total_requests(), 4);
        assert_eq!(c.latency_count, 4);
        assert_eq!(c.retries, 4);
        assert_eq!(ImdsCounters::from_json("garbage"), ImdsCounters::default());
    }
}
