//! Records (keys, format, apply) and the journal.

use std::fs;
use std::io::Write;

use serde_json::json;

use super::*;
use crate::event::Action;
use crate::verdict::Verdict;

fn sample() -> Record {
    Record {
        name: "ens5".into(),
        mac: Some("02:00:00:00:00:05".into()),
        driver: Some("ena".into()),
        module: Some("ena".into()),
        builtin: false,
        transport: None,
        transport_builtin: false,
        device_number: None,
        devpath: "/devices/pci0000:00/0000:00:05.0/net/ens5".into(),
        ifindex: Some(2),
        seen_ms: 1000,
        departed: Some(Departure {
            verdict: Verdict::DriverUnload,
            boot_ms: 2000,
        }),
    }
}

#[test]
fn records_round_trip() {
    let r = sample();
    let text = serde_json::to_string(&r.to_json()).unwrap();
    assert_eq!(Record::from_json(&text), Some(r));
}

#[test]
fn malformed_records_read_as_none() {
    for bad in [
        "",
        "{",
        "[]",
        "{\"name\":\"x\"}",
        "{\"name\":1,\"devpath\":\"/d\",\"seen_ms\":1}",
    ] {
        assert_eq!(Record::from_json(bad), None, "{bad:?}");
    }
    // Another format version, a bad MAC, a devpath outside /devices.
    let good = sample().to_json();
    for (k, v) in [
        ("format", json!(1)),
        ("mac", json!("02:00:00:00:00:0g")),
        ("devpath", json!("/devices/../x/net/ens5")),
    ] {
        let mut bad = good.clone();
        bad[k] = v;
        assert_eq!(Record::from_json(&bad.to_string()), None, "{k}");
    }
}

#[test]
fn records_are_keyed_by_mac_and_device() {
    let r = sample();
    let virtio = Record {
        devpath: "/devices/pci0000:00/0000:00:05.0/virtio3/net/ens5".into(),
        ..sample()
    };
    // A virtio NIC's device is the PCI function: the same key.
    assert_eq!(r.key(), virtio.key());
    assert!(r.key().starts_with("020000000005/"), "{}", r.key());
    let other_mac = Record {
        mac: Some("02:00:00:00:00:06".into()),
        ..sample()
    };
    assert_ne!(r.key(), other_mac.key());
    let other_slot = Record {
        devpath: "/devices/pci0000:00/0000:00:06.0/net/ens5".into(),
        ..sample()
    };
    assert_ne!(r.key(), other_slot.key());
    assert!(record_key(None, r.device()).starts_with("nomac/"));
}

fn update(action: Action, verdict: Verdict, prior: Option<Record>) -> Update {
    Update {
        action,
        verdict,
        iface: "ens5".into(),
        old_iface: None,
        devpath: Some(sample().devpath),
        ifindex: Some(2),
        present: None,
        prior,
        driver: Some("ena".into()),
        module: Some("ena".into()),
    }
}

#[test]
fn apply_follows_the_nic() {
    let dir = tempfile::tempdir().unwrap();
    let st = State::new(dir.path());
    st.ensure().unwrap();
    let lock = st.lock().unwrap();
    let present = Record {
        departed: None,
        ..sample()
    };
    let mut add = update(Action::Add, Verdict::NewDevice, None);
    add.present = Some(present.clone());
    st.apply(&lock, &add).unwrap();
    assert_eq!(
        st.record_for("ens5", Some(&present.devpath)),
        Some(present.clone())
    );

    // A late remove of an older incarnation (ifindex 1) changes nothing.
    let mut late = update(Action::Remove, Verdict::DriverUnload, Some(present.clone()));
    late.ifindex = Some(1);
    st.apply(&lock, &late).unwrap();
    assert_eq!(st.record_for("ens5", None), Some(present.clone()));

    // The remove of this one marks it departed.
    st.apply(
        &lock,
        &update(Action::Remove, Verdict::DriverUnload, Some(present.clone())),
    )
    .unwrap();
    let r = st.record_for("ens5", None).unwrap();
    assert_eq!(r.departed.unwrap().verdict, Verdict::DriverUnload);

    // A rename moves it; a removal drops it.
    let mut mv = update(Action::Move, Verdict::Renamed, Some(present.clone()));
    mv.iface = "lan0".into();
    mv.devpath = Some("/devices/pci0000:00/0000:00:05.0/net/lan0".into());
    st.apply(&lock, &mv).unwrap();
    assert_eq!(st.record_for("ens5", None), None);
    let r = st.record_for("lan0", None).unwrap();
    st.apply(
        &lock,
        &update(Action::Remove, Verdict::DeviceRemoved, Some(r)),
    )
    .unwrap();
    assert!(st.records().is_empty());

    // A remove with no record leaves a MAC-less record of its device,
    // superseded by the next NIC added there.
    st.apply(&lock, &update(Action::Remove, Verdict::DriverUnbind, None))
        .unwrap();
    let stub = st.record_for("ens5", Some(&present.devpath)).unwrap();
    assert_eq!(
        (stub.mac, stub.departed.unwrap().verdict),
        (None, Verdict::DriverUnbind)
    );
    st.apply(&lock, &add).unwrap();
    assert_eq!(st.records(), vec![present]);
}

#[test]
fn journal_rotates_and_tail_skips_torn_lines() {
    let dir = tempfile::tempdir().unwrap();
    let st = State::new(dir.path());
    st.ensure().unwrap();
    let lock = st.lock().unwrap();
    for i in 0..50 {
        st.append_journal(&lock, &json!({"n": i}), 400).unwrap();
    }
    let total = fs::metadata(st.journal_path()).unwrap().len()
        + fs::metadata(dir.path().join("journal.jsonl.1"))
            .unwrap()
            .len();
    assert!(total <= 800, "journal grew to {total} bytes");
    // A torn last line (writer killed) is skipped, not fatal.
    fs::OpenOptions::new()
        .append(true)
        .open(st.journal_path())
        .unwrap()
        .write_all(b"{\"n\": 5")
        .unwrap();
    let tail = st.journal_tail(3);
    let ns: Vec<u64> = tail.iter().map(|v| v["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, vec![47, 48, 49]);
    // The next append starts on a line of its own.
    st.append_journal(&lock, &json!({"n": 50}), 1 << 20)
        .unwrap();
    let tail = st.journal_tail(2);
    let ns: Vec<u64> = tail.iter().map(|v| v["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, vec![49, 50]);
}
