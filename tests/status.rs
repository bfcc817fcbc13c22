//! `hotplug-hook status` for people: journal times as local date and time
//! with their age; `--json` keeps the stored milliseconds for machines.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{ModKind, Tree, ok, stdout};
use serde_json::Value;

/// 2026-11-29 13:54:04.250 UTC, in ms since the epoch.
const TS_MS: u64 = 1_795_960_444_250;

/// A tree (scanned, so its state dir is the hook's own) whose journal holds
/// one handled event at [`TS_MS`].
fn journal_tree() -> Tree {
    let t = Tree::new();
    t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    let entry = serde_json::json!({
        "ts_ms": TS_MS,
        "kind": "event",
        "iface": "ens5",
        "action": "remove",
        "verdict": "driver-unload",
    });
    let path = t.state.join("journal.jsonl");
    let old = fs::read_to_string(&path).unwrap_or_default();
    fs::write(&path, format!("{entry}\n{old}")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    t
}

fn line_of<'a>(text: &'a str, what: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line with {what:?} in\n{text}"))
}

#[test]
fn status_prints_journal_times_as_local_time_and_age() {
    let t = journal_tree();
    let out = t.run(&["status"], &[("TZ", "UTC")]);
    ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains("journal entries (local time, UTC):"),
        "{text}"
    );
    let line = line_of(&text, "ens5 remove: driver-unload");
    assert!(
        line.starts_with("  2026-11-29 13:54:04 ("),
        "expected the local time first:\n{text}"
    );
    // Stamped in 2026: how long ago depends on today, but says so (or, on a
    // machine whose clock is behind that, gives no age).
    assert!(line.contains(" ago) ") || !line.contains('('), "{line}");
    assert!(!line.contains(&TS_MS.to_string()), "{line}");

    // Another zone (POSIX TZ syntax: "UTC-1" is one hour east), no tzdata needed.
    let out = t.run(&["status"], &[("TZ", "UTC-1")]);
    let text = stdout(&out);
    assert!(text.contains("(local time, UTC+01:00):"), "{text}");
    assert!(
        line_of(&text, "driver-unload").starts_with("  2026-11-29 14:54:04 ("),
        "{text}"
    );
}

#[test]
fn status_json_keeps_the_raw_milliseconds() {
    let t = journal_tree();
    let out = t.run(&["status", "--json"], &[("TZ", "UTC")]);
    ok(&out);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let journal = v["journal"].as_array().unwrap();
    let e = journal
        .iter()
        .find(|e| e["verdict"] == "driver-unload")
        .unwrap();
    assert_eq!(e["ts_ms"].as_u64(), Some(TS_MS));
    assert!(journal.iter().all(|e| e["ts_ms"].is_u64()), "{journal:?}");
}
