//! Azure's and Google's metadata clients against request-counting doubles:
//! one GET per confirmation (no token), the listing cached and shared, the
//! cloud's header always sent, and every fault bounded by the deadline.

mod common;

use std::time::Duration;

use common::clouds::VMBUS_GEN2;
use common::imds::{AZURE_NETWORK, Eni, GCE_NICS, ImdsDouble};
use common::{Tree, ok, stdout};
use serde_json::Value;

const AZ_MAC: &str = "00:0d:3a:f8:a1:b2";
const GCE_MAC: &str = "42:01:0a:80:00:02";

fn gce() -> (Tree, String) {
    let t = Tree::new();
    t.dmi("gce");
    let p = t.gve(4, "ens4", GCE_MAC, 2);
    (t, p)
}

fn azure() -> (Tree, String) {
    let t = Tree::new();
    t.dmi("azure");
    let p = t.hv_netvsc(
        VMBUS_GEN2,
        "000d3a6f-0000-4a1c-8b1e-2c5d7f0e8a11",
        "eth0",
        AZ_MAC,
        2,
    );
    (t, p)
}

fn classify(t: &Tree, d: &ImdsDouble, action: &str, devpath: &str, extra: &[&str]) -> Value {
    let endpoint = d.endpoint();
    let mut args = vec![
        "--imds",
        "--imds-endpoint",
        &endpoint,
        "--imds-deadline-ms",
        "1500",
    ];
    args.extend_from_slice(extra);
    args.extend([
        "classify",
        "--json",
        "--action",
        action,
        "--devpath",
        devpath,
    ]);
    let out = t.run(&args, &[]);
    ok(&out);
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn requests(v: &Value) -> Vec<Value> {
    v["imds"]["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn one_get_per_confirmation_then_the_cache() {
    for (cloud, build, listing, mac) in [
        (
            "azure",
            azure as fn() -> (Tree, String),
            AZURE_NETWORK,
            AZ_MAC,
        ),
        ("gce", gce as fn() -> (Tree, String), GCE_NICS, GCE_MAC),
    ] {
        let d = ImdsDouble::start_cloud(cloud, vec![Eni::new(mac, 0)]);
        let (t, nic) = build();
        // Attach: listed at position 0.
        let v = classify(&t, &d, "add", &nic, &[]);
        assert_eq!(v["verdict"], "new-device", "{cloud}: {v}");
        assert_eq!(v["imds"]["presence"]["state"], "attached", "{cloud}: {v}");
        assert_eq!(v["imds"]["presence"]["device_number"], "0", "{cloud}");
        let r = requests(&v);
        assert_eq!(r.len(), 1, "{cloud}: {r:?}");
        assert_eq!(r[0]["path"], listing);
        assert_eq!(d.total(), 1, "{cloud}: one GET, no token PUT");
        // Within the listing TTL, the next asks nothing.
        let v = classify(&t, &d, "add", &nic, &[]);
        assert!(
            requests(&v).iter().all(|r| r["cached"] == true),
            "{cloud}: {v}"
        );
        assert_eq!(d.total(), 1, "{cloud}");
        // Detach: the NIC gone from sysfs and the listing.
        d.enis(|e| e.clear());
        ok(&t.run(&["scan"], &[]));
        t.hot_unplug(&nic);
        let v = classify(&t, &d, "remove", &nic, &["--imds-listing-ttl-ms", "0"]);
        assert_eq!(v["verdict"], "device-removed", "{cloud}: {v}");
        assert_eq!(v["imds"]["presence"]["state"], "detached", "{cloud}: {v}");
        assert_eq!(d.total(), 2, "{cloud}: one more GET");
        assert!(d.seen().iter().all(|s| s.method == "GET" && !s.had_token));
    }
}

#[test]
fn faults_are_bounded_and_unknown() {
    type Fault = fn(&mut common::imds::Faults);
    let faults: [(&str, Fault, &str); 5] = [
        (
            "503 then fine",
            |f| {
                f.status = Some(503);
                f.status_count = Some(1);
            },
            "attached",
        ),
        (
            "429 then fine",
            |f| {
                f.status = Some(429);
                f.status_count = Some(2);
            },
            "attached",
        ),
        ("reset then fine", |f| f.reset_next = 1, "attached"),
        ("garbage", |f| f.garbage = true, "unknown"),
        ("huge body", |f| f.oversized = true, "unknown"),
    ];
    for cloud in ["azure", "gce"] {
        for (what, fault, want) in faults {
            let (t, nic) = if cloud == "azure" { azure() } else { gce() };
            let mac = if cloud == "azure" { AZ_MAC } else { GCE_MAC };
            let d = ImdsDouble::start_cloud(cloud, vec![Eni::new(mac, 0)]);
            d.faults(fault);
            let v = classify(&t, &d, "add", &nic, &[]);
            assert_eq!(v["imds"]["presence"]["state"], want, "{cloud} {what}: {v}");
            assert!(
                d.total() <= 4,
                "{cloud} {what}: bounded retries ({})",
                d.total()
            );
        }
        // Slower than the deadline: unknown, never a hang.
        let (t, nic) = if cloud == "azure" { azure() } else { gce() };
        let d = ImdsDouble::start_cloud(cloud, vec![]);
        d.faults(|f| f.delay = Duration::from_millis(3000));
        let v = classify(&t, &d, "add", &nic, &["--imds-read-timeout-ms", "200"]);
        assert_eq!(
            v["imds"]["presence"]["state"], "unknown",
            "{cloud} delay: {v}"
        );
    }
}

/// The cloud's header is required: a client of another cloud gets nothing.
#[test]
fn the_cloud_decides_the_client() {
    let d = ImdsDouble::start_cloud("gce", vec![Eni::new(GCE_MAC, 0)]);
    let (t, nic) = gce();
    // Set to azure: Azure's path and header on Google's double: unknown.
    let v = classify(&t, &d, "add", &nic, &["--cloud", "azure"]);
    assert_eq!(v["imds"]["presence"]["state"], "unknown", "{v}");
    assert!(d.seen().iter().all(|s| s.path == AZURE_NETWORK));
    // --cloud none: nothing asked.
    let before = d.total();
    let v = classify(&t, &d, "add", &nic, &["--cloud", "none"]);
    assert!(v["imds"].is_null(), "{v}");
    assert_eq!(d.total(), before);
}
