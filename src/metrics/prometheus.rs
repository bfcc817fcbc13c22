//! The Prometheus text exposition of the counters (for node_exporter's
//! textfile collector).

use std::collections::BTreeMap;

use super::*;

impl Metrics {
    /// Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut section = |name: &str, kind: &str, help: &str, body: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{body}"
            ));
        };
        // The cloud as one info gauge rather than a label on every series:
        // join it in where needed (`* on(instance) group_left(cloud)
        // hotplug_hook_info`); every other series keeps its identity.
        if let Some(cloud) = &self.cloud {
            section(
                "hotplug_hook_info",
                "gauge",
                "Always 1; the cloud the hook runs in, as a label.",
                format!("hotplug_hook_info{{cloud=\"{}\"}} 1\n", esc(cloud)),
            );
        }
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
pub(super) fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
