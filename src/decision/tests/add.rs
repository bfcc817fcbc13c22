//! Verdict tables for `decide` on add and move, scope, and `confirm`.

use super::*;

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
