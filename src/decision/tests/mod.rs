//! Verdict tables for `decide` on remove, and the fixtures the others use.

use super::*;
use crate::evidence::{ModuleEvidence, Prior, PriorDeparture, Settle};
use crate::host::module::ModuleState;
use crate::host::sysfs::{Netdev, Slot};

pub(super) const PARENT: &str = "/devices/pci0000:00/0000:00:05.0";
pub(super) const POLICY: Policy = Policy {
    handle_virtual: false,
    return_window_ms: 300_000,
    scope: crate::scope::Scope {
        manage: Vec::new(),
        ignore: Vec::new(),
    },
    cloud: crate::host::cloud::CloudSetting::Auto,
};

pub(super) fn netdev(ifindex: u32, mac: &str) -> Netdev {
    Netdev {
        name: "ens5".into(),
        devpath: format!("{PARENT}/net/ens5"),
        mac: Some(mac.into()),
        ifindex: Some(ifindex),
    }
}

pub(super) fn module(state: ModuleState) -> Option<ModuleEvidence> {
    Some(ModuleEvidence {
        name: "ena".into(),
        state,
        recorded_builtin: false,
    })
}

/// A remove of ens5 (ifindex 2) whose parent is present and unbound,
/// module live, no settle window yet.
pub(crate) fn remove() -> Evidence {
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

pub(super) fn add() -> Evidence {
    Evidence {
        action: Action::Add,
        netdev: Some(netdev(7, "02:00:00:00:00:05")),
        ..remove()
    }
}

pub(super) fn verdict(ev: &Evidence) -> Verdict {
    match decide(ev, &POLICY) {
        Outcome::Decided(d) => {
            assert!(!d.reasons.is_empty(), "a verdict always has reasons");
            d.verdict
        }
        Outcome::Unsettled(why) => panic!("unsettled: {why}"),
    }
}

pub(super) fn expired() -> Option<Settle> {
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
            "bound, its net device counted in net/ but not visible",
            |e| {
                e.parent_driver = Some("ena".into());
                e.parent_net_hidden = 1;
            },
            Verdict::NetdevDetached,
        ),
        (
            "bound, a sibling port in the net dir",
            |e| {
                e.record = Some(record());
                e.parent_driver = Some("mlx4_core".into());
                e.parent_net_hidden = 1;
                e.netdevs = vec![netdev(3, "02:00:00:00:00:99")];
            },
            Verdict::NetdevDetached,
        ),
        (
            "another NIC in our place",
            |e| {
                e.record = Some(record());
                e.parent_driver = Some("ena".into());
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
    // Even when the window runs out, with nothing hidden in its net
    // directory it is a slow probe, never a netns move.
    ev.settle = expired();
    let Outcome::Decided(d) = decide(&ev, &POLICY) else {
        panic!("the window ran out")
    };
    assert_eq!(d.verdict, Verdict::DeviceReturned, "{:?}", d.reasons);
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

/// ens5's record: MAC 02:00:00:00:00:05, ifindex 2, present.
pub(super) fn record() -> crate::state::Record {
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

mod add;
