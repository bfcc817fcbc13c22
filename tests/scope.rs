//! `manage` and `ignore`: NICs out of scope are `unmanaged`, never
//! forwarded, and cost the hook no IMDS request; device-number selectors are
//! applied by the worker, which records the device-number.

mod common;

use std::fs;
use std::time::Duration;

use common::imds::{Eni, ImdsDouble};
use common::{ModKind, Tree, ok, stdout};
use serde_json::Value;

fn flags(d: &ImdsDouble, script: &std::path::Path, scope: &[&str]) -> Vec<String> {
    let mut f: Vec<String> = vec![
        "--imds".into(),
        "--imds-endpoint".into(),
        d.endpoint(),
        "--command".into(),
        script.display().to_string(),
        "--dispatch".into(),
        "fork".into(),
    ];
    f.extend(scope.iter().map(|s| s.to_string()));
    f
}

fn last(t: &Tree, kind: &str) -> Value {
    t.journal()
        .into_iter()
        .rev()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} entry"))
}

fn wait_worker(t: &Tree, n: usize) -> Value {
    t.worker_entries(n, 20)[n - 1].clone()
}

#[test]
fn an_ignored_nic_is_unmanaged_without_imds_or_forwarding() {
    let d = ImdsDouble::start(vec![Eni::new("02:a1:b2:c3:d4:07", 1)]);
    let t = Tree::new();
    let (script, ran) = t.verdict_recorder();
    let ens7 = t.ena(7, "ens7", "02:a1:b2:c3:d4:07", 4, ModKind::Loadable);
    let f = flags(&d, &script, &["--ignore", r#"{"ifname": "ens[6-9]"}"#]);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    ok(&t.udev("add", &ens7, 4, "ena", &f));
    let e = last(&t, "event");
    assert_eq!(e["verdict"], "unmanaged", "{e}");
    assert_eq!(e["reconfigure"], false);
    assert!(
        e["reasons"][0]
            .as_str()
            .unwrap()
            .contains(r#"matches ignore selector {"ifname":"ens[6-9]"}"#),
        "{e}"
    );
    t.hot_unplug(&ens7);
    ok(&t.udev("remove", &ens7, 4, "ena", &f));
    assert_eq!(last(&t, "event")["verdict"], "unmanaged");
    std::thread::sleep(Duration::from_millis(200));
    assert!(fs::read_dir(&ran).unwrap().next().is_none(), "forwarded");
    assert_eq!(d.total(), 0, "{:?}", d.seen());
    assert!(!t.state.join("jobs").read_dir().unwrap().any(|_| true));
}

#[test]
fn a_cni_node_leaves_device_numbers_from_one_to_the_cni() {
    // {"ignore": [{"device_number": "1-"}]}: the primary ENI is ours.
    let d = ImdsDouble::start(vec![
        Eni::new("02:a1:b2:c3:d4:05", 0),
        Eni::new("02:a1:b2:c3:d4:06", 2),
    ]);
    let t = Tree::new();
    let (script, ran) = t.verdict_recorder();
    let scope = ["--ignore", r#"{"device_number": "1-"}"#];
    let f = flags(&d, &script, &scope);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();

    let ens5 = t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable);
    ok(&t.udev("add", &ens5, 2, "ena", &f));
    assert_eq!(last(&t, "event")["verdict"], "new-device");
    assert_eq!(wait_worker(&t, 1)["verdict"], "new-device");
    assert_eq!(
        fs::read_to_string(ran.join("ens5")).unwrap(),
        "new-device\n"
    );

    // The CNI's ENI: the hook cannot tell; the worker learns device-number 2.
    let ens6 = t.ena(6, "ens6", "02:a1:b2:c3:d4:06", 3, ModKind::Loadable);
    ok(&t.udev("add", &ens6, 3, "ena", &f));
    assert_eq!(last(&t, "event")["verdict"], "new-device");
    let w = wait_worker(&t, 2);
    assert_eq!(w["verdict"], "unmanaged", "{w}");
    assert!(!ran.join("ens6").exists(), "the CNI's ENI was configured");
    assert_eq!(t.record("ens6").unwrap()["device_number"], 2);

    // Its detach is decided by the hook from the record: no job, no IMDS.
    let asked = d.total();
    t.hot_unplug(&ens6);
    ok(&t.udev("remove", &ens6, 3, "ena", &f));
    assert_eq!(last(&t, "event")["verdict"], "unmanaged");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.total(), asked);
    assert!(!ran.join("ens6").exists());
}

#[test]
fn primary_eni_only_manages_device_number_zero() {
    let d = ImdsDouble::start(vec![
        Eni::new("02:a1:b2:c3:d4:05", 0),
        Eni::new("02:a1:b2:c3:d4:06", 1),
    ]);
    let t = Tree::new();
    let (script, ran) = t.verdict_recorder();
    let f = flags(&d, &script, &["--manage", r#"{"device_number": "0"}"#]);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let ens5 = t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable);
    let ens6 = t.ena(6, "ens6", "02:a1:b2:c3:d4:06", 3, ModKind::Loadable);
    ok(&t.udev("add", &ens5, 2, "ena", &f));
    wait_worker(&t, 1);
    ok(&t.udev("add", &ens6, 3, "ena", &f));
    assert_eq!(wait_worker(&t, 2)["verdict"], "unmanaged");
    assert!(ran.join("ens5").exists());
    assert!(!ran.join("ens6").exists());
}

#[test]
fn reconcile_spends_one_request_per_nic_a_device_number_selector_needs() {
    let d = ImdsDouble::start(vec![
        Eni::new("02:a1:b2:c3:d4:05", 0),
        Eni::new("02:a1:b2:c3:d4:06", 1),
    ]);
    let t = Tree::new();
    let (script, _) = t.verdict_recorder();
    // Two ENIs whose adds were missed; one is the CNI's.
    t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable);
    t.ena(6, "ens6", "02:a1:b2:c3:d4:06", 3, ModKind::Loadable);
    let mut f = flags(&d, &script, &["--ignore", r#"{"device_number": "1-"}"#]);
    f.extend(["reconcile".into(), "--dry-run".into()]);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let out = t.run(&f, &[]);
    ok(&out);
    let out = stdout(&out);
    assert!(out.contains("would add ens5"), "{out}");
    assert!(!out.contains("ens6"), "{out}");
    // Token, listing, and one device-number per unrecorded NIC.
    assert_eq!(d.total(), 4, "{:?}", d.seen());
}
