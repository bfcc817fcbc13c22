//! Verdict tables for `decide` and `confirm`.

use super::*;
use crate::evidence::{ModuleEvidence, Prior, PriorDeparture, Settle};
use crate::host::module::ModuleState;
use crate::host::sysfs::{Netdev, Slot};

const PARENT: &str = "/devices/pci0000:00/0000:00:05.0";
const POLICY: Policy = Policy {
    handle_virtual: false,
    return_window_ms: 300_000,
    scope: crate::scope::Scope {
        manage: Vec::new(),
        ignore: Vec::new(),
    },
    cloud: crate::host::cloud::CloudSetting::Auto,
};

fn netdev(ifindex: u32, mac: &str) -> Netdev {
    Netdev {
        name: "ens5".into(),
        devpath: format!("{PARENT}/net/ens5"),
        mac: Some(mac.into()),
        ifindex: Some(ifindex),
    }
}

fn module(state: ModuleState) -> Option<ModuleEvidence> {
    Some(ModuleEvidence {
        name: "ena".into(),
        state,
        recorded_builtin: false,
    })
}

/// A remove of ens5 (ifindex 2) whose parent is present and unbound,
/// module live, no settle window yet.
fn remove() -> Evidence {
    Evidence {
        action: Action::Remove,
        iface: "ens5".into(),
        devpath: Some(format!("{PARENT}/net/ens5")),
        parent: Some(PARENT.into()),
        device: Some(PARENT.into()),
        event_ifindex: Some(2),
        parent_present: true,
        device_present: true,
        module: module(ModuleState::Live),
        ..Evidence::default()
    }
}

fn add() -> Evidence {
    Evidence {
        action: Action::Add,
        netdev: Some(netdev(7, "02:00:00:00:00:05")),
        ..remove()
    }
}

fn verdict(ev: &Evidence) -> Verdict {
    match decide(ev, &POLICY) {
        Outcome::Decided(d) => {
            assert!(!d.reasons.is_empty(), "a verdict always has reasons");
            d.verdict
        }
        Outcome::Unsettled(why) => panic!("unsettled: {why}"),
    }
}

fn expired() -> Option<Settle> {
    Some(Settle {
        elapsed_ms: 300,
        polls: 30,
        expired: true,
    })
}

#[test]
fn remove_verdicts() {
    type Case = (&'static str, fn(&mut Evidence), Verdict);
    let cases: &[Case] = &[
        (
            "module going",
            |e| e.module = module(ModuleState::Going),
            Verdict::DriverUnload,
        ),
        (
            "module absent",
            |e| e.module = module(ModuleState::Absent),
            Verdict::DriverUnload,
        ),
        (
            "module coming again",
            |e| e.module = module(ModuleState::Coming),
            Verdict::DriverUnload,
        ),
        (
            "parent gone",
            |e| {
                e.parent_present = false;
                e.device_present = false;
            },
            Verdict::DeviceRemoved,
        ),
        (
            "slot off",
            |e| {
                e.slot = Some(Slot {
                    name: "5".into(),
                    power: Some(false),
                })
            },
            Verdict::DeviceRemoved,
        ),
        (
            "window ran out",
            |e| e.settle = expired(),
            Verdict::DriverUnbind,
        ),
        (
            "builtin, window ran out",
            |e| {
                e.module = module(ModuleState::Builtin);
                e.settle = expired();
            },
            Verdict::DriverUnbind,
        ),
        (
            "no driver known, window ran out",
            |e| {
                e.module = None;
                e.settle = expired();
            },
            Verdict::DriverUnbind,
        ),
        (
            "bound, net dir kept and still empty after 50 ms",
            |e| {
                e.parent_driver = Some("ena".into());
                e.parent_net_dir = true;
                e.settle = Some(Settle {
                    elapsed_ms: NETNS_CONFIRM_MS,
                    polls: 6,
                    expired: false,
                });
            },
            Verdict::NetdevDetached,
        ),
        (
            "bound, a sibling port in the net dir",
            |e| {
                e.record = Some(record());
                e.parent_driver = Some("mlx4_core".into());
                e.parent_net_dir = true;
                e.netdevs = vec![netdev(3, "02:00:00:00:00:99")];
            },
            Verdict::NetdevDetached,
        ),
        (
            "another NIC in our place",
            |e| {
                e.record = Some(record());
                e.parent_driver = Some("ena".into());
                e.parent_net_dir = true;
                e.netdevs = vec![netdev(9, "02:00:00:00:00:77")];
                e.replacement = Some(netdev(9, "02:00:00:00:00:77"));
            },
            Verdict::DeviceRemoved,
        ),
        (
            "bound, no net dir, window ran out",
            |e| {
                e.parent_driver = Some("ena".into());
                e.settle = expired();
            },
            Verdict::DeviceReturned,
        ),
        (
            "bound, module coming",
            |e| {
                e.parent_driver = Some("ena".into());
                e.module = module(ModuleState::Coming);
            },
            Verdict::DeviceReturned,
        ),
        (
            "re-bound after being seen unbound",
            |e| {
                e.parent_driver = Some("ena".into());
                e.seen_unbound = true;
            },
            Verdict::DeviceReturned,
        ),
        (
            "new netdev under the parent",
            |e| e.netdevs = vec![netdev(7, "02:00:00:00:00:05")],
            Verdict::DeviceReturned,
        ),
        ("virtual", |e| e.virtual_dev = true, Verdict::Virtual),
    ];
    for (name, mutate, want) in cases {
        let mut ev = remove();
        mutate(&mut ev);
        assert_eq!(verdict(&ev), *want, "{name}");
    }
}

#[test]
fn unbound_parent_is_unsettled_until_the_window_runs_out() {
    assert!(matches!(decide(&remove(), &POLICY), Outcome::Unsettled(_)));
    // Bound with no net device at all: probe() has not registered it yet.
    let mut ev = remove();
    ev.parent_driver = Some("ena".into());
    let Outcome::Unsettled(why) = decide(&ev, &POLICY) else {
        panic!("a probe under way is not a verdict yet")
    };
    assert!(why.contains("bound to ena with no net device yet"), "{why}");
    // An empty net directory: a registration fills it at once; only one that
    // stays empty is a netns move.
    ev.parent_net_dir = true;
    let Outcome::Unsettled(why) = decide(&ev, &POLICY) else {
        panic!("an empty net dir at first look is not a verdict yet")
    };
    assert!(why.contains("empty net directory"), "{why}");
    // A built-in module absent from /sys/module is not an unload either.
    let mut ev = remove();
    ev.module = Some(ModuleEvidence {
        name: "ena".into(),
        state: ModuleState::Absent,
        recorded_builtin: true,
    });
    assert!(matches!(decide(&ev, &POLICY), Outcome::Unsettled(_)));
}

#[test]
fn the_dying_netdev_is_not_a_return() {
    let mut ev = remove();
    ev.module = module(ModuleState::Going);
    ev.netdevs = vec![netdev(2, "02:00:00:00:00:05")];
    assert_eq!(verdict(&ev), Verdict::DriverUnload);
}

#[test]
fn a_different_mac_under_the_parent_is_not_a_return() {
    let mut ev = remove();
    ev.module = module(ModuleState::Going);
    ev.record = Some(record());
    ev.netdevs = vec![netdev(9, "02:ff:ff:ff:ff:ff")];
    assert_eq!(verdict(&ev), Verdict::DriverUnload);
}

#[test]
fn settle_outcome_is_in_the_reasons() {
    let mut ev = remove();
    ev.parent_present = false;
    ev.device_present = false;
    ev.settle = Some(Settle {
        elapsed_ms: 42,
        polls: 5,
        expired: false,
    });
    let Outcome::Decided(d) = decide(&ev, &POLICY) else {
        panic!()
    };
    assert!(
        d.reasons
            .iter()
            .any(|r| r == "state settled after 42 ms (5 polls)"),
        "{:?}",
        d.reasons
    );
    ev.parent_present = true;
    ev.device_present = true;
    ev.settle = expired();
    let Outcome::Decided(d) = decide(&ev, &POLICY) else {
        panic!()
    };
    assert!(
        d.reasons.iter().any(|r| r.contains("ran out after 300 ms")),
        "{:?}",
        d.reasons
    );
}

fn prior(verdict: Verdict, age_ms: u64) -> Prior {
    Prior {
        name: "ens5".into(),
        mac: Some("02:00:00:00:00:05".into()),
        ifindex: Some(2),
        matched_by: "MAC 02:00:00:00:00:05".into(),
        same_device: true,
        departed: Some(PriorDeparture {
            verdict,
            age_ms: Some(age_ms),
        }),
    }
}

#[test]
fn add_verdicts() {
    let mut ev = add();
    assert_eq!(verdict(&ev), Verdict::NewDevice);
    ev.priors = vec![prior(Verdict::DriverUnload, 1_000)];
    assert_eq!(verdict(&ev), Verdict::DeviceReturned);
    ev.priors = vec![prior(Verdict::NetdevDetached, 299_000)];
    assert_eq!(verdict(&ev), Verdict::DeviceReturned);
    ev.priors = vec![prior(Verdict::DriverUnbind, 301_000)];
    assert_eq!(verdict(&ev), Verdict::NewDevice, "outside the window");
    ev.priors = vec![prior(Verdict::DeviceRemoved, 1_000)];
    assert_eq!(
        verdict(&ev),
        Verdict::NewDevice,
        "a real removal is not transient"
    );
    ev.priors = vec![prior(Verdict::DriverUnload, 0)];
    ev.priors[0].departed.as_mut().unwrap().age_ms = None;
    assert_eq!(
        verdict(&ev),
        Verdict::NewDevice,
        "a departure stamped in the future is expired"
    );
    let present = |ifindex, same_device| Prior {
        departed: None,
        ifindex: Some(ifindex),
        same_device,
        ..prior(Verdict::DriverUnload, 0)
    };
    ev.priors = vec![present(7, true)];
    assert_eq!(verdict(&ev), Verdict::AlreadyKnown);
    ev.priors = vec![present(2, true)];
    assert_eq!(
        verdict(&ev),
        Verdict::DeviceReturned,
        "present with another ifindex: back before its remove was handled"
    );
    ev.priors = vec![present(2, false)];
    assert_eq!(
        verdict(&ev),
        Verdict::NewDevice,
        "the same MAC on another device is not this NIC coming back"
    );
    ev.priors.clear();
    ev.netdev = None;
    assert_eq!(verdict(&ev), Verdict::StaleEvent);
    ev.virtual_dev = true;
    assert_eq!(verdict(&ev), Verdict::Virtual);
}

#[test]
fn move_is_renamed() {
    let ev = Evidence {
        action: Action::Move,
        iface: "eth0".into(),
        old_name: Some("ens5".into()),
        ..Evidence::default()
    };
    let Outcome::Decided(d) = decide(&ev, &POLICY) else {
        panic!()
    };
    assert_eq!(d.verdict, Verdict::Renamed);
    assert_eq!(d.reasons, vec!["renamed from ens5 to eth0"]);
}

#[test]
fn only_real_changes_reconfigure() {
    let reconf: Vec<&str> = Verdict::ALL
        .iter()
        .filter(|v| v.triggers_reconfig())
        .map(|v| v.as_str())
        .collect();
    assert_eq!(reconf, vec!["device-removed", "new-device"]);
    for v in Verdict::ALL {
        assert_eq!(Verdict::parse(v.as_str()), Some(v));
    }
}

#[test]
fn confirm_table() {
    use crate::imds::{Attachment, Presence};
    let attached = Presence::Attached(Attachment {
        device_number: "1".into(),
        network_card_index: None,
        interface_id: None,
    });
    let detached = Presence::Detached("absent from the listing".into());
    let unknown = Presence::Unknown("timed out".into());
    let go = |c: Confirmation| match c {
        Confirmation::Go(v, _) => Some(v),
        _ => None,
    };
    let mac = "02:00:00:00:00:05";
    assert_eq!(
        go(confirm(Confirm::Detach, mac, &detached)),
        Some(Verdict::DeviceRemoved)
    );
    assert_eq!(
        go(confirm(Confirm::Tiebreak, mac, &detached)),
        Some(Verdict::DeviceRemoved),
        "IMDS turns an unbind into a removal"
    );
    assert_eq!(
        go(confirm(Confirm::Attach, mac, &attached)),
        Some(Verdict::NewDevice)
    );
    assert!(matches!(
        confirm(Confirm::Tiebreak, mac, &attached),
        Confirmation::NoAction(_)
    ));
    for (how, p) in [
        (Confirm::Detach, &attached),
        (Confirm::Attach, &detached),
        (Confirm::Attach, &unknown),
        (Confirm::Tiebreak, &unknown),
    ] {
        assert!(
            matches!(confirm(how, mac, p), Confirmation::Wait(_)),
            "{how:?} {p:?}"
        );
    }
}

#[test]
fn out_of_scope_nics_are_unmanaged_before_anything_else() {
    let policy = Policy {
        scope: crate::scope::Scope {
            manage: vec![],
            ignore: vec![
                crate::scope::Selector::from_json(
                    "ignore",
                    &serde_json::json!({"ifname": "ens*", "driver": "ena"}),
                )
                .unwrap(),
            ],
        },
        ..POLICY
    };
    for mut ev in [add(), remove()] {
        ev.driver = Some("ena".into());
        let Outcome::Decided(d) = decide(&ev, &policy) else {
            panic!("unsettled")
        };
        assert_eq!(d.verdict, Verdict::Unmanaged);
        assert!(
            d.reasons[0].contains(r#"matches ignore selector {"driver":"ena","ifname":"ens*"}"#),
            "{:?}",
            d.reasons
        );
        assert!(!d.verdict.triggers_reconfig());
    }
    // Virtual devices stay "virtual"; other drivers are managed.
    let mut ev = remove();
    ev.virtual_dev = true;
    assert_eq!(verdict_with(&ev, &policy), Verdict::Virtual);
    let mut ev = remove();
    ev.driver = Some("ixgbevf".into());
    ev.module = module(ModuleState::Going);
    assert_eq!(verdict_with(&ev, &policy), Verdict::DriverUnload);
}

fn verdict_with(ev: &Evidence, policy: &Policy) -> Verdict {
    match decide(ev, policy) {
        Outcome::Decided(d) => d.verdict,
        Outcome::Unsettled(why) => panic!("unsettled: {why}"),
    }
}

/// ens5's record: MAC 02:00:00:00:00:05, ifindex 2, present.
fn record() -> crate::state::Record {
    crate::state::Record {
        name: "ens5".into(),
        mac: Some("02:00:00:00:00:05".into()),
        driver: Some("ena".into()),
        module: Some("ena".into()),
        builtin: false,
        transport: None,
        transport_builtin: false,
        device_number: None,
        devpath: format!("{PARENT}/net/ens5"),
        ifindex: Some(2),
        seen_ms: 0,
        departed: None,
    }
}
