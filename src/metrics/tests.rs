//! Counters, JSON round trips and the Prometheus text.

use super::*;

#[test]
fn counters_round_trip_and_merge() {
    let mut a = ImdsCounters::default();
    a.request("token", Some(200), 1.5);
    a.request("macs", None, 2.0);
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
    assert_eq!(c.requests["macs error"], 2);
    assert_eq!(c.total_requests(), 4);
    assert_eq!(c.retries, 4);
    assert_eq!(Metrics::from_json("garbage"), Metrics::default());
}

#[test]
fn prometheus_text() {
    let mut m = Metrics::default();
    m.event("remove", "driver-unload", 0.0021);
    m.event("remove", "driver-unload", 0.0004);
    m.event("add", "new-device", 3.0);
    m.imds.request("macs", Some(429), 12.0);
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
        "hotplug_hook_imds_request_duration_seconds_sum 0.012\n",
        "# TYPE hotplug_hook_stranded_jobs_total counter\n",
        "hotplug_hook_stranded_jobs_total 3\n",
        "hotplug_hook_resumed_jobs_total 0\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert_eq!(esc("a\"b\\c\n"), "a\\\"b\\\\c\\n");
}
