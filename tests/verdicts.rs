//! Every verdict, from the real binary run the way udev runs it, on sysfs
//! trees mutated the way the kernel mutates them.

mod common;

use std::time::Instant;

use common::{ModKind, Tree, ok, stderr};

const MAC5: &str = "02:a1:b2:c3:d4:05";
const MAC6: &str = "02:a1:b2:c3:d4:06";

/// Two ENIs on Nitro, recorded at boot by `scan`.
fn nitro(kind: ModKind) -> (Tree, String, String) {
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, kind);
    let ens6 = t.ena(6, "ens6", MAC6, 3, kind);
    ok(&t.run(&["scan"], &[]));
    (t, ens5, ens6)
}

#[test]
fn scan_records_every_real_interface() {
    let t = Tree::new();
    t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    t.xen_vif(1, "eth1", "02:00:00:00:01:01", 4);
    t.veth("veth0", "0a:00:00:00:00:01", 9);
    let out = t.run(&["scan"], &[]);
    ok(&out);
    assert!(common::stdout(&out).contains("recorded 2 interfaces: ens5, eth1"));
    let r = t.record("ens5").expect("ens5 recorded");
    assert_eq!(r["mac"], MAC5);
    assert_eq!(r["driver"], "ena");
    assert_eq!(r["module"], "ena");
    assert_eq!(r["ifindex"], 2);
    assert_eq!(t.record("eth1").unwrap()["module"], "xen_netfront");
    assert!(
        t.record("veth0").is_none(),
        "virtual devices are not recorded"
    );
}

#[test]
fn module_unload_in_progress_is_driver_unload_without_waiting() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    // Mid `modprobe -r ena`: module going, ens5 unbound, driver dir still there.
    t.module_going("ena");
    t.unbind(&ens5);
    let start = Instant::now();
    let out = t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "5000"]);
    let took = start.elapsed();
    let log = ok(&out);
    assert_eq!(t.last_verdict(), "driver-unload", "{log}");
    assert!(
        took.as_millis() < 2500,
        "decided at once, not after the 5 s window ({took:?})"
    );
    let e = t.journal().pop().unwrap();
    assert!(e["settle"].is_null(), "no settle window was needed: {e}");
    assert!(e["reasons"].to_string().contains("module ena is going"));
    // The departure is remembered with its MAC, for the returning add.
    let rec = t.record("ens5").unwrap();
    assert_eq!(rec["departed"]["verdict"], "driver-unload");
    assert_eq!(rec["mac"], MAC5);
}

#[test]
fn module_already_freed_is_driver_unload() {
    let (t, ens5, ens6) = nitro(ModKind::Loadable);
    t.unload("pci", "ena", "ena", &[&ens5, &ens6]);
    ok(&t.udev("remove", &ens6, 3, "ena", &[]));
    assert_eq!(t.last_verdict(), "driver-unload");
    let e = t.journal().pop().unwrap();
    assert!(
        e["reasons"].to_string().contains("module ena is absent"),
        "{e}"
    );
}

#[test]
fn reload_already_finished_is_device_returned() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    t.unload("pci", "ena", "ena", &[&ens5]);
    // modprobe ena: the driver is back and ens5 has a new ifindex before
    // udevd got round to running the hook for the remove.
    t.driver("pci", "ena", "ena", ModKind::Loadable);
    t.bind("/devices/pci0000:00/0000:00:05.0", "pci", "ena");
    t.netdev("/devices/pci0000:00/0000:00:05.0", "ens5", MAC5, 7);
    ok(&t.udev("remove", &ens5, 2, "ena", &[]));
    assert_eq!(t.last_verdict(), "device-returned");
    let e = t.journal().pop().unwrap();
    assert!(e["reasons"].to_string().contains("ifindex 7 vs 2"), "{e}");
    assert!(e["action_taken"].is_null());
}

#[test]
fn dying_netdev_still_in_sysfs_is_not_a_return() {
    // The kernel sends the remove uevent before it deletes the sysfs
    // directory: the hook can see the dying ens5 with its old ifindex.
    let (t, ens5, _) = nitro(ModKind::Loadable);
    t.module_going("ena");
    t.rm("/devices/pci0000:00/0000:00:05.0/driver");
    assert!(t.exists(&ens5));
    ok(&t.udev("remove", &ens5, 2, "ena", &[]));
    assert_eq!(t.last_verdict(), "driver-unload");
}

#[test]
fn pci_hot_unplug_is_device_removed() {
    let (t, _, ens6) = nitro(ModKind::Loadable);
    t.hot_unplug(&ens6);
    ok(&t.udev("remove", &ens6, 3, "ena", &[]));
    assert_eq!(t.last_verdict(), "device-removed");
    assert!(
        t.record("ens6").is_none(),
        "a removed device's record is dropped"
    );
    let e = t.journal().pop().unwrap();
    assert_eq!(e["reconfigure"], true);
    assert_eq!(e["action_taken"]["backend"], "none");
}

#[test]
fn parent_vanishing_during_the_settle_window_is_device_removed() {
    // The race: the hook runs after unbind but before the PCI device is
    // deleted; it must wait, and stop as soon as the parent goes.
    let (t, _, ens6) = nitro(ModKind::Loadable);
    t.unbind(&ens6);
    // Late enough that the hook has surely started (it takes milliseconds).
    let mutation = t.after(300, |root| {
        std::fs::remove_dir_all(root.join("devices/pci0000:00/0000:00:06.0")).unwrap();
    });
    // (When it stops is proven with a fake clock in src/settle.rs.)
    ok(&t.udev("remove", &ens6, 3, "ena", &["--settle-ms", "30000"]));
    mutation.join().unwrap();
    assert_eq!(t.last_verdict(), "device-removed");
    let e = t.journal().pop().unwrap();
    assert_eq!(e["settle"]["expired"], false, "{e}");
    assert!(
        e["reasons"].to_string().contains("state settled after"),
        "{e}"
    );
}

#[test]
fn slot_powered_off_is_device_removed_at_once() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    t.unbind(&ens5);
    t.slot_power(5, false);
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "5000"]));
    assert_eq!(t.last_verdict(), "device-removed");
    let e = t.journal().pop().unwrap();
    assert!(
        e["reasons"]
            .to_string()
            .contains("PCI slot 5 is powered off"),
        "{e}"
    );
    assert!(e["settle"].is_null());
}

#[test]
fn sysfs_unbind_is_driver_unbind_after_the_window() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    t.unbind(&ens5);
    let start = Instant::now();
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "150"]));
    assert!(start.elapsed().as_millis() >= 150);
    assert_eq!(t.last_verdict(), "driver-unbind");
    let e = t.journal().pop().unwrap();
    assert_eq!(e["settle"]["expired"], true, "{e}");
    assert!(
        e["reasons"]
            .to_string()
            .contains("settle window ran out after"),
        "{e}"
    );
}

#[test]
fn rebind_during_the_window_is_device_returned() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    t.unbind(&ens5);
    let m = t.after(300, |root| {
        std::os::unix::fs::symlink(
            "../../../bus/pci/drivers/ena",
            root.join("devices/pci0000:00/0000:00:05.0/driver"),
        )
        .unwrap();
    });
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "3000"]));
    m.join().unwrap();
    assert_eq!(t.last_verdict(), "device-returned");
}

#[test]
fn builtin_driver_unbind_is_not_an_unload() {
    // Built-in ena: /sys/module/ena exists without initstate; it cannot be
    // unloaded, so an unbound parent is an unbind (or an unplug).
    let (t, ens5, _) = nitro(ModKind::Builtin);
    assert_eq!(t.record("ens5").unwrap()["builtin"], true);
    t.unbind(&ens5);
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "50"]));
    assert_eq!(t.last_verdict(), "driver-unbind");
    let e = t.journal().pop().unwrap();
    assert!(
        e["reasons"].to_string().contains("module ena is builtin"),
        "{e}"
    );
}

#[test]
fn netns_move_is_netdev_detached() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    t.netns_move(&ens5);
    ok(&t.udev("remove", &ens5, 2, "ena", &["--settle-ms", "5000"]));
    assert_eq!(t.last_verdict(), "netdev-detached");
    assert_eq!(
        t.record("ens5").unwrap()["departed"]["verdict"],
        "netdev-detached"
    );
}

#[test]
fn virtual_devices_are_ignored() {
    let t = Tree::new();
    let veth = t.veth("veth0", "0a:00:00:00:00:01", 9);
    ok(&t.udev("add", &veth, 9, "veth", &[]));
    assert_eq!(t.last_verdict(), "virtual");
    t.drop_netdev(&veth);
    ok(&t.udev("remove", &veth, 9, "veth", &[]));
    assert_eq!(t.last_verdict(), "virtual");
    assert!(t.record("veth0").is_none());
}

#[test]
fn virtual_devices_can_be_handled_as_nics() {
    let t = Tree::new();
    let veth = t.veth("veth0", "0a:00:00:00:00:01", 9);
    ok(&t.udev("add", &veth, 9, "veth", &["--handle-virtual"]));
    assert_eq!(t.last_verdict(), "new-device");
    t.drop_netdev(&veth);
    ok(&t.udev("remove", &veth, 9, "veth", &["--handle-virtual"]));
    assert_eq!(t.last_verdict(), "device-removed");
}

#[test]
fn veth_moved_to_a_netns_and_back_is_detached_then_returned() {
    let t = Tree::new();
    let (_, veth1) = t.veth_pair(("veth0", 8), ("veth1", 9));
    ok(&t.udev("add", &veth1, 9, "veth", &["--handle-virtual"]));
    assert_eq!(t.last_verdict(), "new-device");
    // `ip link set veth1 netns ns`: veth0 stays, its iflink still 9.
    t.netns_move(&veth1);
    ok(&t.udev("remove", &veth1, 9, "veth", &["--handle-virtual"]));
    assert_eq!(t.last_verdict(), "netdev-detached");
    let e = t.journal().pop().unwrap();
    assert!(e["reasons"].to_string().contains("veth peer veth0"), "{e}");
    // And back.
    let back = t.veth("veth1", "0a:00:00:00:00:0b", 9);
    ok(&t.udev("add", &back, 9, "veth", &["--handle-virtual"]));
    assert_eq!(t.last_verdict(), "device-returned");
    // Deleting the pair takes both ends: a removal.
    t.drop_netdev(&back);
    t.drop_netdev("/devices/virtual/net/veth0");
    ok(&t.udev("remove", &back, 9, "veth", &["--handle-virtual"]));
    assert_eq!(t.last_verdict(), "device-removed");
}

#[test]
fn new_eni_is_new_device() {
    let (t, _, _) = nitro(ModKind::Loadable);
    let ens7 = t.ena(7, "ens7", "02:a1:b2:c3:d4:07", 4, ModKind::Loadable);
    ok(&t.udev("add", &ens7, 4, "ena", &[]));
    assert_eq!(t.last_verdict(), "new-device");
    let r = t.record("ens7").unwrap();
    assert_eq!(r["mac"], "02:a1:b2:c3:d4:07");
    assert!(r["departed"].is_null());
}

#[test]
fn add_after_a_driver_reload_is_device_returned() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    t.unload("pci", "ena", "ena", &[&ens5]);
    ok(&t.udev("remove", &ens5, 2, "ena", &[]));
    assert_eq!(t.last_verdict(), "driver-unload");
    t.driver("pci", "ena", "ena", ModKind::Loadable);
    t.bind("/devices/pci0000:00/0000:00:05.0", "pci", "ena");
    let back = t.netdev("/devices/pci0000:00/0000:00:05.0", "ens5", MAC5, 7);
    ok(&t.udev("add", &back, 7, "ena", &[]));
    assert_eq!(t.last_verdict(), "device-returned");
    let e = t.journal().pop().unwrap();
    assert!(e["action_taken"].is_null(), "no reconfiguration: {e}");
    let r = t.record("ens5").unwrap();
    assert!(r["departed"].is_null());
    assert_eq!(r["ifindex"], 7);
}

#[test]
fn add_long_after_a_transient_remove_is_new_device() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    t.netns_move(&ens5);
    ok(&t.udev("remove", &ens5, 2, "ena", &[]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let back = t.netdev("/devices/pci0000:00/0000:00:05.0", "ens5", MAC5, 8);
    ok(&t.udev("add", &back, 8, "ena", &["--return-window-secs", "1"]));
    assert_eq!(t.last_verdict(), "new-device");
}

#[test]
fn replayed_add_is_already_known() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    ok(&t.udev("add", &ens5, 2, "ena", &[]));
    assert_eq!(t.last_verdict(), "already-known");
}

#[test]
fn add_for_a_vanished_device_is_stale() {
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    t.hot_unplug(&ens5);
    ok(&t.udev("add", &ens5, 2, "ena", &[]));
    assert_eq!(t.last_verdict(), "stale-event");
}

#[test]
fn rename_moves_the_record() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    let new = t.rename(&ens5, "eth0");
    let mut env = Tree::udev_env("move", &new, 2, "ena");
    env.push(("INTERFACE_OLD".into(), "ens5".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ok(&t.run(&["handle"], &env));
    assert_eq!(t.last_verdict(), "renamed");
    assert!(t.record("ens5").is_none());
    let r = t.record("eth0").unwrap();
    assert_eq!(r["mac"], MAC5);
    assert_eq!(r["devpath"], new);
}

#[test]
fn xen_vif_unload() {
    let t = Tree::new();
    let eth0 = t.xen_vif(0, "eth0", "02:00:00:00:00:10", 2);
    ok(&t.run(&["scan"], &[]));
    t.module_going("xen_netfront");
    t.unbind(&eth0);
    ok(&t.udev("remove", &eth0, 2, "vif", &[]));
    assert_eq!(t.last_verdict(), "driver-unload");
    let e = t.journal().pop().unwrap();
    assert!(
        e["reasons"]
            .to_string()
            .contains("module xen_netfront is going"),
        "{e}"
    );
}

#[test]
fn xen_vif_removal() {
    let t = Tree::new();
    let eth1 = t.xen_vif(1, "eth1", "02:00:00:00:00:11", 3);
    t.hot_unplug(&eth1);
    // No record, no scan: ID_NET_DRIVER alone is enough.
    ok(&t.udev("remove", &eth1, 3, "vif", &[]));
    assert_eq!(t.last_verdict(), "device-removed");
}

#[test]
fn ixgbevf_unbind_and_unload() {
    let t = Tree::new();
    let eth0 = t.ixgbevf(3, "eth0", "02:00:00:00:00:20", 2);
    let eth1 = t.ixgbevf(4, "eth1", "02:00:00:00:00:21", 3);
    t.unbind(&eth0);
    ok(&t.udev("remove", &eth0, 2, "ixgbevf", &["--settle-ms", "30"]));
    assert_eq!(t.last_verdict(), "driver-unbind");
    t.unload("pci", "ixgbevf", "ixgbevf", &[&eth1]);
    ok(&t.udev("remove", &eth1, 3, "ixgbevf", &[]));
    assert_eq!(t.last_verdict(), "driver-unload");
}

#[test]
fn virtio_net_unload_without_id_net_driver_uses_the_record() {
    let t = Tree::new();
    let ens3 = t.virtio_net(3, 0, "ens3", "52:54:00:12:34:56", 2);
    ok(&t.run(&["scan"], &[]));
    t.unload("virtio", "virtio_net", "virtio_net", &[&ens3]);
    let env = [
        ("ACTION", "remove"),
        ("SUBSYSTEM", "net"),
        ("DEVPATH", ens3.as_str()),
        ("INTERFACE", "ens3"),
        ("IFINDEX", "2"),
    ];
    ok(&t.run(&["handle"], &env));
    assert_eq!(t.last_verdict(), "driver-unload");
}

#[test]
fn by_hand_handle_infers_the_action() {
    let (t, ens5, _) = nitro(ModKind::Loadable);
    // Present → add-like check.
    let out = t.run(&["handle", "--iface", "ens5"], &[]);
    ok(&out);
    assert_eq!(t.last_verdict(), "already-known");
    // Gone, but recorded → remove-like check, devpath from the record.
    t.hot_unplug(&ens5);
    ok(&t.run(&["handle", "--iface", "ens5"], &[]));
    assert_eq!(t.last_verdict(), "device-removed");
    // Neither: a usage error.
    let out = t.run(&["handle", "--iface", "ens9"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("ens9 is not in"));
}

#[test]
fn other_subsystems_and_actions_exit_zero_untouched() {
    let t = Tree::new();
    for env in [
        vec![
            ("ACTION", "add"),
            ("SUBSYSTEM", "block"),
            ("DEVPATH", "/devices/virtual/block/loop0"),
        ],
        vec![
            ("ACTION", "change"),
            ("SUBSYSTEM", "net"),
            ("INTERFACE", "eth0"),
        ],
    ] {
        ok(&t.run(&["handle"], &env));
    }
    assert!(t.state_snapshot().is_empty());
}
