//! Verdict tables per cloud: EC2 (Nitro, Xen), Azure (Gen1, Gen2, with
//! accelerated networking VFs of every kind) and Google Cloud (gve,
//! virtio_net), from the real binary run as udev runs it, on sysfs trees
//! shaped like each cloud's and mutated the way the kernel mutates them.

mod common;

use common::clouds::{VMBUS_GEN1, VMBUS_GEN2, Vf};
use common::{ModKind, Tree, ok, stdout};

const SETTLE: &[&str] = &["--settle-ms", "100"];
const GUID0: &str = "000d3a6f-0000-4a1c-8b1e-2c5d7f0e8a11";
const GUID1: &str = "6f1c6a3e-9a1b-4c3d-8e2f-0a1b2c3d4e5f";
const GUID2: &str = "7a2b3c4d-5e6f-4081-92a3-b4c5d6e7f809";

/// A NIC of a fixture: where it is and how its driver is registered.
#[derive(Clone)]
struct Nic {
    devpath: String,
    ifindex: u32,
    /// `ID_NET_DRIVER`.
    net_driver: &'static str,
    /// The bus, driver and module to unload.
    bus: &'static str,
    driver: &'static str,
    module: &'static str,
}

/// What happens to the NIC before the event.
#[derive(Clone, Copy, Debug)]
enum Case {
    Unload,
    Unbind,
    Netns,
    HotUnplug,
    ReplayedAdd,
}

fn run_case(t: &Tree, nic: &Nic, case: Case) -> String {
    let action = match case {
        Case::Unload => {
            t.unload(nic.bus, nic.driver, nic.module, &[&nic.devpath]);
            "remove"
        }
        Case::Unbind => {
            t.unbind(&nic.devpath);
            "remove"
        }
        Case::Netns => {
            t.netns_move(&nic.devpath);
            "remove"
        }
        Case::HotUnplug => {
            t.hot_unplug(&nic.devpath);
            "remove"
        }
        Case::ReplayedAdd => "add",
    };
    ok(&t.udev(action, &nic.devpath, nic.ifindex, nic.net_driver, SETTLE));
    t.last_verdict()
}

/// Runs every case on a fresh machine from `build`, checking the verdicts.
fn table(machine: &str, build: impl Fn(&Tree) -> Nic, cases: &[(Case, &str)]) {
    for (case, want) in cases {
        let t = Tree::new();
        let nic = build(&t);
        ok(&t.run(&["scan"], &[]));
        let got = run_case(&t, &nic, *case);
        let j = t.journal();
        let last = j.last().unwrap();
        assert_eq!(got, *want, "{machine} {case:?}: {}", last["reasons"]);
        assert!(last["action_taken"].is_null() || *want == "device-removed");
    }
}

const EC2_CASES: &[(Case, &str)] = &[
    (Case::Unload, "driver-unload"),
    (Case::Unbind, "driver-unbind"),
    (Case::Netns, "netdev-detached"),
    (Case::HotUnplug, "device-removed"),
    (Case::ReplayedAdd, "already-known"),
];

#[test]
fn ec2_nitro_ena() {
    table(
        "nitro ena",
        |t| {
            t.dmi("ec2");
            Nic {
                devpath: t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable),
                ifindex: 2,
                net_driver: "ena",
                bus: "pci",
                driver: "ena",
                module: "ena",
            }
        },
        EC2_CASES,
    );
}

#[test]
fn ec2_xen_vif_and_ixgbevf() {
    table(
        "xen vif",
        |t| {
            t.dmi("ec2-xen");
            Nic {
                devpath: t.xen_vif(0, "eth0", "0a:1b:2c:3d:4e:5f", 2),
                ifindex: 2,
                net_driver: "vif",
                bus: "xen",
                driver: "vif",
                module: "xen_netfront",
            }
        },
        EC2_CASES,
    );
    table(
        "xen ixgbevf",
        |t| {
            t.dmi("ec2-xen");
            Nic {
                devpath: t.ixgbevf(3, "eth1", "0a:1b:2c:3d:4e:60", 3),
                ifindex: 3,
                net_driver: "ixgbevf",
                bus: "pci",
                driver: "ixgbevf",
                module: "ixgbevf",
            }
        },
        &EC2_CASES[..3],
    );
}

fn synthetic(t: &Tree, vmbus: &str) -> Nic {
    t.dmi("azure");
    Nic {
        devpath: t.hv_netvsc(vmbus, GUID0, "eth0", "00:0d:3a:f8:a1:b2", 2),
        ifindex: 2,
        net_driver: "hv_netvsc",
        bus: "vmbus",
        driver: "hv_netvsc",
        module: "hv_netvsc",
    }
}

/// The synthetic NIC is judged like EC2's NICs: its VMBus device vanishing
/// is a removal.
#[test]
fn azure_synthetic_nic() {
    for vmbus in [VMBUS_GEN1, VMBUS_GEN2] {
        table(
            &format!("azure hv_netvsc {vmbus}"),
            |t| synthetic(t, vmbus),
            EC2_CASES,
        );
    }
}

/// An Azure VM with accelerated networking: eth0 (`hv_netvsc`) and its VF.
fn accelerated(vmbus: &str, vf: Vf) -> (Tree, String, String) {
    let t = Tree::new();
    let eth0 = synthetic(&t, vmbus).devpath;
    let vf_path = t.azure_vf(vmbus, GUID1, 0x7870, vf, "00:0d:3a:f8:a1:b2", 3);
    ok(&t.run(&["scan"], &[]));
    (t, eth0, vf_path)
}

#[test]
fn azure_vf_flaps_are_vf_flap_and_never_depart_the_synthetic_nic() {
    for vmbus in [VMBUS_GEN1, VMBUS_GEN2] {
        for vf in Vf::ALL {
            let what = format!("{vmbus} {vf:?}");
            let (t, _eth0, vf_path) = accelerated(vmbus, vf);
            let before = t.record("eth0").unwrap();
            // The host takes the VF away (servicing, live migration)...
            t.revoke_vf(&vf_path);
            ok(&t.udev("remove", &vf_path, 3, vf.net_driver(), &[]));
            assert_eq!(t.last_verdict(), "vf-flap", "{what}");
            let e = t.journal().pop().unwrap();
            assert!(e["action_taken"].is_null(), "never forwarded: {e}");
            assert!(e["settle"].is_null(), "no settle wait: {e}");
            assert!(e["reasons"].to_string().contains("eth0"), "{what}: {e}");
            // ...and gives it back, on another Hyper-V PCI bus.
            let back = t.azure_vf(vmbus, GUID2, 0x9a41, vf, "00:0d:3a:f8:a1:b2", 4);
            ok(&t.udev("add", &back, 4, vf.net_driver(), &[]));
            assert_eq!(t.last_verdict(), "vf-flap", "{what}");
            // The synthetic NIC's record is untouched throughout.
            let after = t.record("eth0").unwrap();
            assert_eq!(after["departed"], before["departed"], "{what}");
            assert!(after["departed"].is_null(), "{what}: {after}");
            assert_eq!(t.record("enP39489s1").unwrap()["mac"], "00:0d:3a:f8:a1:b2");
        }
    }
}

/// Accelerated networking turned off: the VF goes and does not come back.
/// Its remove is still a VF flap while the synthetic NIC is present; the
/// VF's own record says it left (vf-flap), the synthetic NIC's does not.
#[test]
fn azure_accelerated_networking_off() {
    let (t, eth0, vf_path) = accelerated(VMBUS_GEN2, Vf::Mlx5);
    t.revoke_vf(&vf_path);
    ok(&t.udev("remove", &vf_path, 3, "mlx5_core", &[]));
    assert_eq!(t.last_verdict(), "vf-flap");
    assert_eq!(
        t.record("enP30832s1").unwrap()["departed"]["verdict"],
        "vf-flap"
    );
    assert!(t.record("eth0").unwrap()["departed"].is_null());
    // eth0 carries on; its later removal is a removal.
    t.remove_vmbus_nic(&eth0);
    ok(&t.udev("remove", &eth0, 2, "hv_netvsc", &[]));
    assert_eq!(t.last_verdict(), "device-removed");
}

/// A VF removed before anything recorded it (no MAC known): still a flap,
/// since a VF on Hyper-V's PCI bus is never a NIC of its own.
#[test]
fn azure_vf_without_record_is_still_a_flap() {
    let t = Tree::new();
    synthetic(&t, VMBUS_GEN2);
    let vf_path = t.azure_vf(VMBUS_GEN2, GUID1, 0x7870, Vf::Mana, "00:0d:3a:f8:a1:b2", 3);
    t.revoke_vf(&vf_path);
    ok(&t.udev("remove", &vf_path, 3, "mana", &[]));
    assert_eq!(t.last_verdict(), "vf-flap");
    let e = t.journal().pop().unwrap();
    assert!(e["reasons"].to_string().contains("not known"), "{e}");
}

/// A VF's driver reloaded (`modprobe -r mlx5_core`) while eth0 stays: the
/// same answer, decided at once.
#[test]
fn azure_vf_driver_unload_is_a_flap_too() {
    let (t, _eth0, vf_path) = accelerated(VMBUS_GEN1, Vf::Mlx4);
    t.unload("pci", "mlx4_core", "mlx4_core", &[&vf_path]);
    ok(&t.udev("remove", &vf_path, 3, "mlx4_en", &[]));
    assert_eq!(t.last_verdict(), "vf-flap");
}

#[test]
fn gce_gve() {
    table(
        "gce gve",
        |t| {
            t.dmi("gce");
            Nic {
                devpath: t.gve(4, "ens4", "42:01:0a:80:00:02", 2),
                ifindex: 2,
                net_driver: "gve",
                bus: "pci",
                driver: "gve",
                module: "gve",
            }
        },
        &[
            (Case::Unload, "driver-unload"),
            (Case::Unbind, "driver-unbind"),
            (Case::Netns, "netdev-detached"),
            (Case::ReplayedAdd, "already-known"),
        ],
    );
}

#[test]
fn gce_virtio_net() {
    table(
        "gce virtio_net",
        |t| {
            t.dmi("gce");
            Nic {
                devpath: t.virtio_net(4, 1, "ens4", "42:01:0a:80:00:03", 2),
                ifindex: 2,
                net_driver: "virtio_net",
                bus: "virtio",
                driver: "virtio_net",
                module: "virtio_net",
            }
        },
        &[
            (Case::Unload, "driver-unload"),
            (Case::Unbind, "driver-unbind"),
            (Case::Netns, "netdev-detached"),
            (Case::ReplayedAdd, "already-known"),
        ],
    );
    // Unbinding the transport (virtio-pci) takes virtio1 and ens4 along.
    let t = Tree::new();
    t.dmi("gce");
    let ens4 = t.virtio_net(4, 1, "ens4", "42:01:0a:80:00:03", 2);
    ok(&t.run(&["scan"], &[]));
    t.unbind_virtio_transport(&ens4);
    ok(&t.udev("remove", &ens4, 2, "virtio_net", SETTLE));
    assert_eq!(t.last_verdict(), "driver-unbind");
}

/// The guest agent's VLAN NICs are virtual.
#[test]
fn gce_guest_agent_vlan_is_virtual() {
    let t = Tree::new();
    t.dmi("gce");
    t.gve(4, "ens4", "42:01:0a:80:00:02", 2);
    let vlan = t.gce_vlan("gcp.ens4.5", "42:01:0a:80:00:02", 7);
    for action in ["add", "remove"] {
        ok(&t.udev(action, &vlan, 7, "8021q", &[]));
        assert_eq!(t.last_verdict(), "virtual");
    }
}

/// `classify` names the cloud and where it read it, on every cloud.
#[test]
fn classify_shows_the_cloud() {
    for (dmi, cloud, source) in [
        ("ec2", "ec2", "class/dmi/id/sys_vendor"),
        ("ec2-xen", "ec2", "hypervisor/uuid"),
        ("azure", "azure", "class/dmi/id/chassis_asset_tag"),
        ("gce", "gce", "class/dmi/id/product_name"),
        ("kvm", "none", "class/dmi/id/sys_vendor"),
    ] {
        let t = Tree::new();
        t.dmi(dmi);
        let ens5 = t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable);
        let out = t.run(
            &["classify", "--json", "--action", "add", "--devpath", &ens5],
            &[],
        );
        ok(&out);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let fact = v["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "cloud")
            .unwrap_or_else(|| panic!("{dmi}: no cloud fact in {v}"))
            .clone();
        assert_eq!(fact["value"], cloud, "{dmi}");
        assert!(
            fact["source"].as_str().unwrap().ends_with(source),
            "{dmi}: {fact}"
        );
    }
    // As set, it is not read.
    let t = Tree::new();
    t.dmi("gce");
    let ens5 = t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable);
    let out = t.run(
        &[
            "--cloud",
            "azure",
            "classify",
            "--action",
            "add",
            "--devpath",
            &ens5,
        ],
        &[],
    );
    assert!(stdout(&ok_out(out)).contains("cloud "), "cloud fact shown");
}

fn ok_out(o: std::process::Output) -> std::process::Output {
    ok(&o);
    o
}

/// The bundled snapshots: `classify` over each shows its cloud.
#[test]
fn classify_over_bundled_fixtures() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (fixture, devpath, driver, verdict, cloud) in [
        (
            "nitro-ena-unload",
            "/devices/pci0000:00/0000:00:05.0/net/ens5",
            "ena",
            "driver-unload",
            "ec2",
        ),
        (
            "azure-vf-flap",
            "/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/6f1c6a3e-9a1b-4c3d-8e2f-0a1b2c3d4e5f/pci7870:00/7870:00:02.0/net/enP30832s1",
            "mlx5_core",
            "vf-flap",
            "azure",
        ),
        (
            "gce-gve-unload",
            "/devices/pci0000:00/0000:00:04.0/net/ens4",
            "gve",
            "driver-unload",
            "gce",
        ),
    ] {
        let t = Tree::new();
        let sys = root.join(fixture).join("sys");
        let out = t.run(
            &[
                "--sysfs-root",
                sys.to_str().unwrap(),
                "classify",
                "--json",
                "--action",
                "remove",
                "--devpath",
                devpath,
                "--driver",
                driver,
            ],
            &[],
        );
        ok(&out);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["verdict"], verdict, "{fixture}: {v}");
        assert!(
            v["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["name"] == "cloud" && f["value"] == cloud),
            "{fixture}: {v}"
        );
    }
}

/// The metrics name the cloud, in one info gauge.
#[test]
fn metrics_carry_the_cloud() {
    let (t, _eth0, vf_path) = accelerated(VMBUS_GEN2, Vf::Mana);
    t.revoke_vf(&vf_path);
    let prom = t.scratch("hotplug-hook.prom");
    let flags = ["--metrics-file", prom.to_str().unwrap()];
    ok(&t.udev("remove", &vf_path, 3, "mana", &flags));
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("hotplug_hook_info{cloud=\"azure\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("verdict=\"vf-flap\""), "{text}");
}
