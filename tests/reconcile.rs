//! `hotplug-hook reconcile`: missed adds and removals found from sysfs, the
//! records and one IMDS listing, forwarded once, with few IMDS requests.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::imds::{Eni, ImdsDouble};
use common::{ModKind, Tree, ok, stdout};
use serde_json::Value;

fn flags(d: &ImdsDouble, script: &std::path::Path) -> Vec<String> {
    vec![
        "--imds".into(),
        "--imds-endpoint".into(),
        d.endpoint(),
        "--backend".into(),
        "command".into(),
        "--command".into(),
        script.display().to_string(),
        "--dispatch".into(),
        "fork".into(),
    ]
}

fn reconcile(t: &Tree, flags: &[String], extra: &[&str]) -> String {
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.push("reconcile");
    args.extend_from_slice(extra);
    let out = t.run(&args, &[]);
    ok(&out);
    stdout(&out)
}

fn ran(dir: &std::path::Path, iface: &str) -> Vec<String> {
    fs::read_to_string(dir.join(iface))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// 16 ENIs recorded at boot; then, with no event handled: ens3 detached
/// (gone from sysfs and from IMDS) and ens20 attached (present, listed).
fn missed_events() -> (Tree, ImdsDouble, Vec<String>) {
    let t = Tree::new();
    let devpaths = t.fleet(16);
    t.hot_unplug(&devpaths[0]);
    t.ena(20, "ens20", "02:a1:b2:c3:d4:20", 40, ModKind::Loadable);
    let mut enis: Vec<Eni> = (1..16)
        .map(|i| Eni::new(&format!("02:a1:b2:c3:d4:{i:02x}"), i))
        .collect();
    enis.push(Eni::new("02:a1:b2:c3:d4:20", 16));
    (t, ImdsDouble::start(enis), devpaths)
}

#[test]
fn missed_adds_and_removals_are_forwarded_once_with_two_imds_requests() {
    let (t, d, _) = missed_events();
    let (script, dir) = t.verdict_recorder();
    let flags = flags(&d, &script);

    // The plan alone: one token, one listing, no record, job or journal
    // line written (the IMDS caches may be).
    let kept = |t: &Tree| {
        let mut s: Vec<(PathBuf, Vec<u8>)> = t
            .state_snapshot()
            .into_iter()
            .filter(|(p, _)| {
                let rel = p.strip_prefix(&t.state).unwrap();
                ["ifaces", "names", "jobs", "journal.jsonl"]
                    .iter()
                    .any(|k| rel.starts_with(k))
            })
            .collect();
        s.sort();
        s
    };
    let before = kept(&t);
    let plan = reconcile(&t, &flags, &["--dry-run"]);
    assert!(plan.contains("would add ens20"), "{plan}");
    assert!(plan.contains("would remove ens3"), "{plan}");
    assert_eq!(plan.matches("would add").count(), 1, "{plan}");
    assert_eq!(plan.matches("would remove").count(), 1, "{plan}");
    assert_eq!(d.total(), 2, "token and listing: {:?}", d.seen());
    assert!(
        kept(&t) == before,
        "the dry run changed records, jobs or the journal"
    );
    assert!(!dir.join("ens20").exists());

    let out = reconcile(&t, &flags, &[]);
    assert!(out.contains("add ens20"), "{out}");
    assert!(out.contains("remove ens3"), "{out}");
    let workers = t.worker_entries(2, 30);
    assert!(
        workers.iter().all(|w| w["imds"]["result"] == "agreed"),
        "{workers:?}"
    );
    assert_eq!(ran(&dir, "ens20"), ["new-device"]);
    assert_eq!(ran(&dir, "ens3"), ["device-removed"]);
    let kinds: Vec<Value> = t
        .journal()
        .into_iter()
        .filter(|e| e["kind"] == "reconcile")
        .map(|e| e["verdict"].clone())
        .collect();
    assert_eq!(kinds, ["new-device", "device-removed"]);

    // Idempotent: the second run finds nothing and starts nothing.
    let again = reconcile(&t, &flags, &[]);
    assert!(again.contains("nothing missed"), "{again}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(t.worker_entries(2, 30).len(), 2);
    assert_eq!(ran(&dir, "ens20"), ["new-device"]);
}

#[test]
fn a_nic_still_listed_or_an_imds_that_cannot_answer_is_left_alone() {
    let (t, d, devpaths) = missed_events();
    let (script, dir) = t.verdict_recorder();
    let flags = flags(&d, &script);
    // ens4's driver went away (it is gone from sysfs) but IMDS still lists
    // it: a reload or an unbind, not a detach.
    t.unload("pci", "ena", "ena", &[devpaths[1].as_str()]);
    let plan = reconcile(&t, &flags, &["--dry-run"]);
    assert!(!plan.contains("remove ens4"), "{plan}");

    // IMDS answers 503 every time: no add and no removal can be confirmed.
    d.faults(|f| f.status = Some(503));
    let out = reconcile(&t, &flags, &["--imds-listing-ttl-ms", "0"]);
    assert!(out.contains("could not list"), "{out}");
    assert!(out.contains("nothing missed"), "{out}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(fs::read_dir(&dir).unwrap().next().is_none());
}

#[test]
fn without_imds_sysfs_alone_decides() {
    let t = Tree::new();
    let devpaths = t.fleet(2);
    t.hot_unplug(&devpaths[0]);
    t.ena(9, "ens9", "02:a1:b2:c3:d4:09", 20, ModKind::Loadable);
    let out = t.run(&["reconcile", "--dry-run"], &[]);
    let out = stdout(&out);
    assert!(out.contains("IMDS is off"), "{out}");
    assert!(out.contains("would add ens9"), "{out}");
    assert!(out.contains("would remove ens3"), "{out}");
}
