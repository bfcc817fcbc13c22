//! Event orderings seen under a real kernel (Debian 6.1 in QEMU, real udevd;
//! see tests/realkernel.rs), replayed on sysfs models so a regression shows
//! without QEMU: the kernel's rename `move`, removes handled after the NIC is
//! back, virtio transports, fast rebinds, and removals decided by the worker.

mod common;

use std::time::{Duration, Instant};

use common::imds::{Eni, ImdsDouble};
use common::{ModKind, Tree, ok, stderr};
use serde_json::Value;

const MAC3: &str = "52:54:00:12:34:03";
const MAC5: &str = "02:a1:b2:c3:d4:05";
const MAC7: &str = "02:a1:b2:c3:d4:07";
const VIRTIO_PCI: &str = "/devices/pci0000:00/0000:00:03.0";

fn last_event(t: &Tree) -> Value {
    t.journal()
        .into_iter()
        .rev()
        .find(|e| e["kind"] == "event")
        .expect("an event entry")
}

fn reasons(t: &Tree) -> String {
    last_event(t)["reasons"].to_string()
}

/// A virtio NIC `ens3` (ifindex 2) under `virtio0`, recorded by `scan`.
/// `virtio_pci` is loadable when `transport` says so.
fn virtio(transport: ModKind) -> (Tree, String) {
    let t = Tree::new();
    t.driver("pci", "virtio-pci", "virtio_pci", transport);
    let ens3 = t.virtio_net(3, 0, "ens3", MAC3, 2);
    ok(&t.run(&["scan"], &[]));
    (t, ens3)
}

/// The kernel's `move` for a rename: DEVPATH_OLD, no INTERFACE_OLD.
fn kernel_move(t: &Tree, old: &str, new: &str, ifindex: u32, driver: &str) {
    let out = t
        .udev_command("move", new, ifindex, driver, &[], &[("DEVPATH_OLD", old)])
        .output()
        .unwrap();
    ok(&out);
}

/// virtio_net registers the NIC again under `virtio0` with a new ifindex.
fn virtio_net_back(t: &Tree, name: &str, ifindex: u32) -> String {
    t.bind(&format!("{VIRTIO_PCI}/virtio0"), "virtio", "virtio_net");
    t.netdev(&format!("{VIRTIO_PCI}/virtio0"), name, MAC3, ifindex)
}

#[test]
fn the_kernels_rename_move_is_handled_and_the_record_follows() {
    let (t, ens3) = virtio(ModKind::Builtin);
    let lan0 = t.rename(&ens3, "lan0");
    kernel_move(&t, &ens3, &lan0, 2, "virtio_net");
    assert_eq!(t.last_verdict(), "renamed");
    assert!(t.record("ens3").is_none());
    assert_eq!(t.record("lan0").unwrap()["mac"], MAC3);

    // A reload under the new name: the remove knows the MAC, and the NIC
    // coming back (as ens3 again, udev's name) is a return, not a new NIC.
    t.unload("virtio", "virtio_net", "virtio_net", &[&lan0]);
    ok(&t.udev("remove", &lan0, 2, "virtio_net", &[]));
    let e = last_event(&t);
    assert_eq!(
        (e["verdict"].as_str(), e["mac"].as_str()),
        (Some("driver-unload"), Some(MAC3))
    );
    t.driver("virtio", "virtio_net", "virtio_net", ModKind::Loadable);
    let ens3 = virtio_net_back(&t, "ens3", 5);
    ok(&t.udev("add", &ens3, 5, "virtio_net", &[]));
    assert_eq!(t.last_verdict(), "device-returned");

    // Back from a network namespace: a move with its own name changes nothing.
    let before = t.records();
    kernel_move(&t, &ens3, &ens3, 5, "virtio_net");
    assert_eq!(t.last_verdict(), "renamed");
    assert_eq!(t.records(), before);
}

#[test]
fn a_remove_handled_after_the_nic_is_back_leaves_its_add_a_return() {
    for remove_first in [true, false] {
        let (t, ens3) = virtio(ModKind::Builtin);
        // `modprobe -r virtio_net; modprobe virtio_net` finished before
        // udevd ran either hook.
        t.unload("virtio", "virtio_net", "virtio_net", &[&ens3]);
        t.driver("virtio", "virtio_net", "virtio_net", ModKind::Loadable);
        virtio_net_back(&t, "ens3", 4);
        let remove = || ok(&t.udev("remove", &ens3, 2, "virtio_net", &[]));
        let add = || ok(&t.udev("add", &ens3, 4, "virtio_net", &[]));
        if remove_first {
            remove();
            assert_eq!(t.last_verdict(), "device-returned");
            add();
        } else {
            add();
            assert_eq!(t.last_verdict(), "device-returned", "{}", reasons(&t));
            remove();
        }
        assert_eq!(t.last_verdict(), "device-returned", "{}", reasons(&t));
        let verdicts: Vec<String> = t
            .journal()
            .iter()
            .map(|e| e["verdict"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(verdicts, ["device-returned", "device-returned"]);
        let r = t.record("ens3").unwrap();
        assert_eq!(
            (r["ifindex"].as_u64(), &r["departed"]),
            (Some(4), &Value::Null)
        );
        // udevadm trigger afterwards: a replay.
        add();
        assert_eq!(t.last_verdict(), "already-known");
    }
}

#[test]
fn virtio_transport_unbind_is_an_unbind_and_its_return_no_new_device() {
    let (t, ens3) = virtio(ModKind::Builtin);
    // echo 0000:00:03.0 > /sys/bus/pci/drivers/virtio-pci/unbind
    t.unbind_virtio_transport(&ens3);
    ok(&t.udev("remove", &ens3, 2, "virtio_net", &["--settle-ms", "30"]));
    assert_eq!(t.last_verdict(), "driver-unbind", "{}", reasons(&t));
    assert!(
        reasons(&t).contains("virtio device /devices/pci0000:00/0000:00:03.0/virtio0 is gone"),
        "{}",
        reasons(&t)
    );
    // ... and bound again: a new virtio device, the same NIC.
    t.bind(VIRTIO_PCI, "pci", "virtio-pci");
    t.device(&format!("{VIRTIO_PCI}/virtio0"), "virtio", None);
    let ens3 = virtio_net_back(&t, "ens3", 6);
    ok(&t.udev("add", &ens3, 6, "virtio_net", &[]));
    assert_eq!(t.last_verdict(), "device-returned", "{}", reasons(&t));
}

#[test]
fn virtio_pci_reload_is_a_driver_unload() {
    let (t, ens3) = virtio(ModKind::Loadable);
    assert_eq!(t.record("ens3").unwrap()["transport"], "virtio_pci");
    // modprobe -r virtio_pci, as the hook sees it: the module is gone.
    t.module_going("virtio_pci");
    t.unbind_virtio_transport(&ens3);
    t.module_freed("pci", "virtio-pci", "virtio_pci");
    let start = Instant::now();
    ok(&t.udev("remove", &ens3, 2, "virtio_net", &["--settle-ms", "5000"]));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "decided without the window"
    );
    assert_eq!(t.last_verdict(), "driver-unload", "{}", reasons(&t));
    assert!(
        reasons(&t).contains("module virtio_pci is absent"),
        "{}",
        reasons(&t)
    );
}

#[test]
fn virtio_hot_unplug_is_a_removal_and_a_replug_a_new_device() {
    let (t, ens3) = virtio(ModKind::Builtin);
    t.unbind_virtio_transport(&ens3);
    t.rm(VIRTIO_PCI);
    ok(&t.udev("remove", &ens3, 2, "virtio_net", &[]));
    assert_eq!(t.last_verdict(), "device-removed", "{}", reasons(&t));
    assert!(t.record("ens3").is_none());
    // device_add with the same MAC into the same slot.
    let ens3 = t.virtio_net(3, 0, "ens3", MAC3, 7);
    ok(&t.udev("add", &ens3, 7, "virtio_net", &[]));
    assert_eq!(t.last_verdict(), "new-device", "{}", reasons(&t));
}

/// ens5 (recorded) unbound and bound again, its probe not yet done: the
/// driver is linked, no net device is registered.
fn rebound_mid_probe() -> (Tree, String) {
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    t.unbind(&ens5);
    t.bind("/devices/pci0000:00/0000:00:05.0", "pci", "ena");
    (t, ens5)
}

#[test]
fn a_fast_rebind_is_not_reported_as_a_netns_move() {
    // The kernel links the driver before probe() registers the net device:
    // bound, and no net device (nor its `net` directory) yet.
    let (t, ens5) = rebound_mid_probe();
    let probe = t.after(50, |root| {
        let dir = root.join("devices/pci0000:00/0000:00:05.0/net/ens5");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ifindex"), "7\n").unwrap();
        std::fs::write(dir.join("address"), format!("{MAC5}\n")).unwrap();
    });
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "5000"]));
    probe.join().unwrap();
    assert_eq!(t.last_verdict(), "device-returned", "{}", reasons(&t));
    assert!(!reasons(&t).contains("namespace"), "{}", reasons(&t));

    // A probe still under way when the window runs out says just that.
    let (t, ens5) = rebound_mid_probe();
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "20"]));
    assert_eq!(t.last_verdict(), "device-returned", "{}", reasons(&t));
    let why = reasons(&t);
    assert!(why.contains("has not registered one yet"), "{why}");
    assert!(!why.contains("namespace"), "{why}");
}

#[test]
fn a_new_eni_in_the_slot_of_one_that_left_is_a_new_device() {
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    t.unbind(&ens5);
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "20"]));
    assert_eq!(t.last_verdict(), "driver-unbind");
    // Another ENI (another MAC) is attached in the same PCI slot.
    t.hot_unplug(&ens5);
    let ens5 = t.ena(5, "ens5", MAC7, 3, ModKind::Loadable);
    ok(&t.udev("add", &ens5, 3, "ena", &[]));
    assert_eq!(t.last_verdict(), "new-device", "{}", reasons(&t));
    // The record of the ENI that left that slot is superseded.
    let recs = t.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["mac"], MAC7);
}

#[test]
fn one_mac_on_two_devices_keeps_two_records() {
    // Azure: the synthetic NIC and its VF carry the same MAC.
    let t = Tree::new();
    t.ena(5, "eth0", MAC5, 2, ModKind::Loadable);
    t.ixgbevf(6, "enP1s1", MAC5, 3);
    ok(&t.run(&["scan"], &[]));
    let names: Vec<String> = t
        .records()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["enP1s1", "eth0"]);
}

#[test]
fn a_removal_the_worker_confirms_is_recorded_so_a_reattach_is_configured() {
    // ens5 is unbound and stays so past the window, module live: the hook
    // cannot tell; the worker asks IMDS, which says detached.
    let mut eni = Eni::new(MAC5, 1);
    eni.listed = false;
    let d = ImdsDouble::start(vec![eni]);
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    t.unbind(&ens5);
    let endpoint = d.endpoint();
    let flags = [
        "--imds",
        "--imds-endpoint",
        &endpoint,
        "--backend",
        "command",
        "--command",
        "/bin/true",
        "--dispatch",
        "fork",
        "--settle-ms",
        "20",
    ];
    ok(&t.udev("remove", &ens5, 2, "ena", &flags));
    assert_eq!(t.last_verdict(), "driver-unbind");
    let deadline = Instant::now() + Duration::from_secs(20);
    let worker = loop {
        if let Some(w) = t.journal().into_iter().find(|e| e["kind"] == "worker") {
            break w;
        }
        assert!(Instant::now() < deadline, "no worker entry");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(worker["verdict"], "device-removed", "{worker}");
    assert!(t.record("ens5").is_none(), "{:?}", t.records());

    // The same ENI attached again within the return window: configured.
    t.hot_unplug(&ens5);
    let ens5 = t.ena(5, "ens5", MAC5, 4, ModKind::Loadable);
    let out = t.udev("add", &ens5, 4, "ena", &["--settle-ms", "20"]);
    ok(&out);
    assert_eq!(
        t.last_verdict(),
        "new-device",
        "{} {}",
        reasons(&t),
        stderr(&out)
    );
}

#[test]
fn a_nic_replugged_with_another_mac_before_the_remove_ran_is_a_removal() {
    let (t, ens3) = virtio(ModKind::Builtin);
    // device_del, then device_add with a new MAC into the same slot, both
    // before udevd ran the hook for the first NIC's remove.
    t.unbind_virtio_transport(&ens3);
    t.rm(VIRTIO_PCI);
    let new = t.virtio_net(3, 0, "ens3", "52:54:00:12:35:03", 9);
    ok(&t.udev("remove", &ens3, 2, "virtio_net", &[]));
    assert_eq!(t.last_verdict(), "device-removed", "{}", reasons(&t));
    assert!(
        reasons(&t).contains("another NIC took its place"),
        "{}",
        reasons(&t)
    );
    ok(&t.udev("add", &new, 9, "virtio_net", &[]));
    assert_eq!(t.last_verdict(), "new-device", "{}", reasons(&t));
}

#[test]
fn an_empty_net_dir_being_filled_is_a_return_not_a_netns_move() {
    // probe() registering the net device: the `net` directory exists a
    // moment before the device in it.
    let (t, ens5) = rebound_mid_probe();
    std::fs::create_dir_all(t.p("/devices/pci0000:00/0000:00:05.0/net")).unwrap();
    let probe = t.after(20, |root| {
        let dir = root.join("devices/pci0000:00/0000:00:05.0/net/eth0");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ifindex"), "8\n").unwrap();
        std::fs::write(dir.join("address"), format!("{MAC5}\n")).unwrap();
    });
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "5000"]));
    probe.join().unwrap();
    assert_eq!(t.last_verdict(), "device-returned", "{}", reasons(&t));

    // A net directory that stays empty with nothing hidden in it (a slow
    // probe, or a leftover) is never called a netns move.
    let (t, ens5) = rebound_mid_probe();
    std::fs::create_dir_all(t.p("/devices/pci0000:00/0000:00:05.0/net")).unwrap();
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "30"]));
    assert_eq!(t.last_verdict(), "device-returned", "{}", reasons(&t));

    // A net device hidden in another namespace is counted in the link count
    // of `net/`: a netns move, decided at the first look.
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    t.netns_move(&ens5);
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "5000"]));
    assert_eq!(t.last_verdict(), "netdev-detached", "{}", reasons(&t));
    assert_eq!(
        last_event(&t)["settle"],
        Value::Null,
        "no second look needed"
    );
}

#[test]
fn the_first_events_on_an_empty_state_dir_race_to_create_it_and_all_land() {
    // Boot: several NICs' adds at once, before anything made the state dir.
    for _ in 0..3 {
        let t = Tree::new();
        let devpaths = t.enis(8);
        assert!(!t.state.exists());
        let events: Vec<(&str, &str, u32)> = devpaths
            .iter()
            .enumerate()
            .map(|(i, d)| ("add", d.as_str(), 2 + i as u32))
            .collect();
        t.handle_all(&events, &[]);
        let verdicts: Vec<Value> = t.journal().iter().map(|e| e["verdict"].clone()).collect();
        assert_eq!(verdicts.len(), 8, "{verdicts:?}");
        assert!(verdicts.iter().all(|v| v == "new-device"), "{verdicts:?}");
        assert_eq!(t.records().len(), 8);
    }
}
