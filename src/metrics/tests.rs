//! Counters, JSON round trips and the Prometheus text.

use super::prometheus::esc;
use super::*;

#[test]
fn counters_round_trip_and_merge() {
    let mut a = ImdsCounters::default();
    a.request("token", Some(200), false, 1.5);
    a.request("macs", None, false, 2.0);
    a.request("macs", None, true, 1000.0);
    a.request("mac-key", Some(429), false, 3.0);
    a.cache_hit("token");
    a.retries = 2;
    a.token_fetches = 1;
    let mut m = Metrics {
        imds: a.clone(),
        ..Metrics::default()
    };
    m.event("remove", "driver-unload", 0.0021);
    m.event("add", "new-device", 3.0);
    m.reconfiguration("command", "dispatched");
    m.stranded_jobs = 2;
    m.resumed_jobs = 1;
    let back = Metrics::from_json(&m.to_json().to_string());
    assert_eq!(back, m);
    let mut c = a.clone();
    c.merge(&a);
    assert_eq!(c.requests["token 200"], 2);
    assert_eq!(c.requests["macs error"], 4);
    assert_eq!(c.total_requests(), 8);
    assert_eq!(c.throttled, 2);
    assert_eq!(c.latency["timeout"].count, 2);
    assert_eq!(c.latency["error"].count, 2);
    assert_eq!(
        c.latency["ok"].buckets[1], 2,
        "1.5 ms is in the 2.5 ms bucket"
    );
    assert_eq!(c.retries, 4);
    assert_eq!(Metrics::from_json("garbage"), Metrics::default());
}

#[test]
fn prometheus_text() {
    let mut m = Metrics::default();
    m.event("remove", "driver-unload", 0.0021);
    m.event("remove", "driver-unload", 0.0004);
    m.event("add", "new-device", 3.0);
    m.imds.request("macs", Some(429), false, 12.0);
    m.imds.request("macs", Some(200), false, 0.5);
    m.imds.request("macs", Some(200), false, 1.0);
    m.imds.request("macs", Some(200), false, 7000.0);
    m.reconfiguration("command", "done");
    m.stranded_jobs = 3;
    let text = m.to_prometheus();
    for want in [
        "# TYPE hotplug_hook_events_total counter\n",
        "hotplug_hook_events_total{action=\"remove\",verdict=\"driver-unload\"} 2\n",
        "hotplug_hook_decision_duration_seconds_bucket{le=\"0.0005\"} 1\n",
        "hotplug_hook_decision_duration_seconds_bucket{le=\"0.005\"} 2\n",
        "hotplug_hook_decision_duration_seconds_bucket{le=\"1\"} 2\n",
        "hotplug_hook_decision_duration_seconds_bucket{le=\"+Inf\"} 3\n",
        "hotplug_hook_decision_duration_seconds_count 3\n",
        "hotplug_hook_imds_requests_total{kind=\"macs\",status=\"429\"} 1\n",
        "# TYPE hotplug_hook_imds_request_duration_seconds histogram\n",
        "hotplug_hook_imds_request_duration_seconds_bucket{outcome=\"throttled\",le=\"0.01\"} 0\n",
        "hotplug_hook_imds_request_duration_seconds_bucket{outcome=\"throttled\",le=\"0.025\"} 1\n",
        "hotplug_hook_imds_request_duration_seconds_sum{outcome=\"throttled\"} 0.012\n",
        "hotplug_hook_imds_request_duration_seconds_count{outcome=\"throttled\"} 1\n",
        "hotplug_hook_imds_request_duration_seconds_bucket{outcome=\"ok\",le=\"0.001\"} 2\n",
        "hotplug_hook_imds_request_duration_seconds_bucket{outcome=\"ok\",le=\"5\"} 2\n",
        "hotplug_hook_imds_request_duration_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 3\n",
        "hotplug_hook_imds_request_duration_seconds_count{outcome=\"ok\"} 3\n",
        "hotplug_hook_imds_request_duration_seconds_bucket{outcome=\"timeout\",le=\"+Inf\"} 0\n",
        "hotplug_hook_imds_request_duration_seconds_count{outcome=\"absent\"} 0\n",
        "hotplug_hook_imds_throttled_total 1\n",
        "hotplug_hook_reconfigurations_total{backend=\"command\",result=\"done\"} 1\n",
        "hotplug_hook_reconfigurations_total{backend=\"command\",result=\"failed\"} 0\n",
        "# TYPE hotplug_hook_stranded_jobs_total counter\n",
        "hotplug_hook_stranded_jobs_total 3\n",
        "hotplug_hook_resumed_jobs_total 0\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert_eq!(esc("a\"b\\c\n"), "a\\\"b\\\\c\\n");
}

#[test]
fn prometheus_text_has_no_summary_and_every_outcome() {
    let text = Metrics::default().to_prometheus();
    assert!(!text.contains(" summary\n"), "{text}");
    for o in Outcome::ALL {
        let want = format!(
            "hotplug_hook_imds_request_duration_seconds_bucket{{outcome=\"{}\",le=\"+Inf\"}} 0\n",
            o.as_str()
        );
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    // 12 bounds and +Inf per outcome.
    assert_eq!(
        text.matches("hotplug_hook_imds_request_duration_seconds_bucket{outcome=\"ok\"")
            .count(),
        13
    );
}

#[test]
fn outcomes_from_status_and_timeouts() {
    assert_eq!(Outcome::of(Some(200), false), Outcome::Ok);
    assert_eq!(Outcome::of(Some(404), false), Outcome::Absent);
    assert_eq!(Outcome::of(Some(429), false), Outcome::Throttled);
    assert_eq!(Outcome::of(Some(401), false), Outcome::Error);
    assert_eq!(Outcome::of(Some(503), false), Outcome::Error);
    assert_eq!(Outcome::of(None, false), Outcome::Error);
    assert_eq!(Outcome::of(None, true), Outcome::Timeout);
}

#[test]
fn a_file_from_before_the_histogram_loads_with_zero_buckets() {
    let old = r#"{"events":{"add new-device":1},"stranded_jobs":2,
        "imds":{"requests":{"token 200":1,"macs 200":1},"latency_ms_sum":3.5,
        "latency_count":2,"cache_hits":{},"retries":1,"token_fetches":1}}"#;
    let mut m = Metrics::from_json(old);
    assert_eq!(m.stranded_jobs, 2);
    assert_eq!(m.imds.latency_count, 2);
    assert!(m.imds.latency.is_empty());
    assert_eq!(m.imds.throttled, 0);
    assert_eq!(m.imds.latency_buckets(), vec![0; IMDS_BUCKETS.len() + 1]);
    assert!(
        m.to_prometheus()
            .contains("hotplug_hook_imds_request_duration_seconds_count{outcome=\"ok\"} 0\n")
    );
    // Counting on top of it works, and buckets of another length (another
    // release's bounds) read as zero.
    m.imds.request("token", Some(200), false, 2.0);
    assert_eq!(m.imds.latency["ok"].count, 1);
    assert_eq!(m.imds.latency_count, 3);
    let odd = r#"{"imds":{"latency":{"ok":{"buckets":[1,2],"sum_seconds":1,"count":3}}}}"#;
    assert!(Metrics::from_json(odd).imds.latency.is_empty());
}

#[test]
fn quantiles_from_buckets() {
    assert_eq!(quantile(0.5, &[0; 13]), None);
    let mut h = Histogram::default();
    for _ in 0..100 {
        h.observe(0.003); // the (2.5 ms, 5 ms] bucket
    }
    let p50 = quantile(0.5, &h.buckets).unwrap();
    assert!((p50 - 0.00375).abs() < 1e-9, "{p50}");
    h.observe(9.0);
    assert_eq!(
        quantile(1.0, &h.buckets),
        Some(5.0),
        "+Inf: the highest bound"
    );
    assert!(quantile(0.99, &h.buckets).unwrap() <= 0.005);
}
