//! Histograms: fixed buckets, counts per bucket, and quantile estimates.

use serde_json::{Value, json};

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
    pub(crate) fn fix(&mut self) {
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

    pub(crate) fn to_json(&self) -> Value {
        let mut h = self.clone();
        h.fix();
        json!({
            "buckets": h.buckets,
            "sum_seconds": self.sum_seconds,
            "count": self.count,
        })
    }

    /// Buckets of another length (another release's bounds) read as zero.
    pub(crate) fn from_value(v: &Value) -> Histogram {
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
