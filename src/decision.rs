//! The classification: a pure function from [`Evidence`] to a verdict with
//! the reasons that led to it. No I/O here; `evidence` gathers, this decides.

use crate::event::Action;
use crate::evidence::Evidence;
use crate::imds::Presence;
use crate::module::ModuleState;
pub use crate::verdict::Verdict;

/// A verdict and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// The knobs the decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub handle_virtual: bool,
    pub return_window_ms: u64,
}

/// A decision, or "not decisive yet: look again" (only for an unbound parent
/// whose settle window has not run out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Decided(Decision),
    Unsettled(String),
}

fn done(verdict: Verdict, mut reasons: Vec<String>, settle_note: Option<String>) -> Outcome {
    reasons.extend(settle_note);
    Outcome::Decided(Decision { verdict, reasons })
}

/// Classifies an event from its evidence.
pub fn decide(ev: &Evidence, policy: &Policy) -> Outcome {
    match ev.action {
        Action::Move => done(
            Verdict::Renamed,
            vec![format!(
                "renamed from {} to {}",
                ev.old_name.as_deref().unwrap_or("?"),
                ev.iface
            )],
            None,
        ),
        Action::Add => decide_add(ev, policy),
        Action::Remove => decide_remove(ev, policy),
    }
}

fn decide_add(ev: &Evidence, policy: &Policy) -> Outcome {
    let mut why = Vec::new();
    if ev.virtual_dev {
        if !policy.handle_virtual {
            why.push("parent is under /devices/virtual/: not a NIC".to_string());
            return done(Verdict::Virtual, why, None);
        }
        why.push("virtual device, handled as a NIC (handle_virtual)".to_string());
    }
    let Some(netdev) = &ev.netdev else {
        why.push(format!(
            "{} is no longer in sysfs: it left before the hook ran; its remove event follows",
            ev.iface
        ));
        return done(Verdict::StaleEvent, why, None);
    };
    let window_s = policy.return_window_ms / 1000;
    for p in &ev.priors {
        let Some(dep) = &p.departed else { continue };
        if !dep.verdict.is_transient_departure() {
            continue;
        }
        match dep.age_ms {
            Some(age) if age <= policy.return_window_ms => {
                why.push(format!(
                    "{} ({}) left {:.1} s ago with verdict {} (window {window_s} s)",
                    p.matched_by,
                    p.name,
                    age as f64 / 1000.0,
                    dep.verdict.as_str(),
                ));
                return done(Verdict::DeviceReturned, why, None);
            }
            Some(age) => why.push(format!(
                "{} ({}) left {} s ago with verdict {}: outside the {window_s} s window",
                p.matched_by,
                p.name,
                age / 1000,
                dep.verdict.as_str()
            )),
            None => why.push(format!(
                "{} ({}) left with verdict {} at a time later than now: too old to count",
                p.matched_by,
                p.name,
                dep.verdict.as_str()
            )),
        }
    }
    // Recorded as present on this device with this MAC: a replay, or (with
    // another ifindex) the NIC re-registered before its remove was handled.
    let present = ev
        .priors
        .iter()
        .filter(|p| p.departed.is_none() && p.same_device && p.mac.is_some());
    let mut returned = None;
    for p in present {
        if p.ifindex == netdev.ifindex {
            why.push(format!(
                "{} is already recorded as {} with ifindex {}: a replayed add",
                p.matched_by,
                p.name,
                p.ifindex.map_or("?".to_string(), |i| i.to_string())
            ));
            return done(Verdict::AlreadyKnown, why, None);
        }
        returned.get_or_insert(p);
    }
    if let Some(p) = returned {
        why.push(format!(
            "{} is recorded as present ({}, ifindex {}) and is back with ifindex {}: \
             it re-registered before its remove was handled",
            p.matched_by,
            p.name,
            p.ifindex.map_or("?".to_string(), |i| i.to_string()),
            netdev.ifindex.map_or("?".to_string(), |i| i.to_string())
        ));
        return done(Verdict::DeviceReturned, why, None);
    }
    why.push(format!(
        "no record of MAC {} present or leaving within {window_s} s",
        netdev.mac.as_deref().unwrap_or("?")
    ));
    why.extend(imds_note(ev, true));
    done(Verdict::NewDevice, why, None)
}

/// What IMDS adds to a reconfiguring verdict. It never overrules sysfs:
/// IMDS lags both ways, so a disagreement only delays reconfiguration.
fn imds_note(ev: &Evidence, adding: bool) -> Option<String> {
    let imds = ev.imds.as_ref()?;
    Some(match (&imds.presence, adding) {
        (Presence::Attached(a), true) => format!(
            "IMDS confirms it: device-number {}, network-card-index {}, interface-id {}",
            a.device_number,
            a.network_card_index.as_deref().unwrap_or("?"),
            a.interface_id.as_deref().unwrap_or("?")
        ),
        (Presence::Detached(d), true) => {
            format!("IMDS does not show it yet ({d}): reconfiguration waits for IMDS")
        }
        (Presence::Detached(d), false) => format!("IMDS agrees: {d}"),
        (Presence::Attached(a), false) => format!(
            "IMDS still shows it attached (device-number {}): IMDS lags after a detach, \
             reconfiguration waits for IMDS",
            a.device_number
        ),
        (Presence::Unknown(e), _) => format!("IMDS could not tell: {e}"),
    })
}

fn decide_remove(ev: &Evidence, policy: &Policy) -> Outcome {
    let mut why = Vec::new();
    let settle = ev.settle.as_ref().map(|s| {
        if s.expired {
            format!(
                "settle window ran out after {} ms ({} polls) without a decisive state",
                s.elapsed_ms, s.polls
            )
        } else {
            format!(
                "state settled after {} ms ({} polls)",
                s.elapsed_ms, s.polls
            )
        }
    });
    let parent = ev.parent.as_deref().unwrap_or("?");

    if ev.virtual_dev {
        if !policy.handle_virtual {
            why.push("parent is under /devices/virtual/: not a NIC".to_string());
            return done(Verdict::Virtual, why, None);
        }
        why.push("virtual device, handled as a NIC (handle_virtual)".to_string());
        if let Some(n) = ev.returned() {
            why.push(format!(
                "{} is back with ifindex {}",
                n.name,
                n.ifindex.unwrap_or(0)
            ));
            return done(Verdict::DeviceReturned, why, None);
        }
        if let Some(peer) = &ev.veth_peer {
            why.push(format!(
                "its veth peer {peer} is still here, linked to ifindex {}: moved to another network namespace",
                ev.gone_ifindex().unwrap_or(0)
            ));
            return done(Verdict::NetdevDetached, why, None);
        }
        why.push(format!("{} is gone from sysfs", ev.iface));
        return done(Verdict::DeviceRemoved, why, None);
    }

    let device = ev.device.as_deref().unwrap_or(parent);
    if let Some(n) = ev.returned() {
        why.push(format!(
            "{device} already has net device {} again (MAC {}, ifindex {} vs {} in the event): \
             the driver came back before the hook ran",
            n.name,
            n.mac.as_deref().unwrap_or("?"),
            n.ifindex.map_or("?".into(), |i| i.to_string()),
            ev.gone_ifindex().map_or("?".into(), |i| i.to_string()),
        ));
        return done(Verdict::DeviceReturned, why, settle);
    }
    if !ev.device_present {
        why.push(format!("device {device} is gone from sysfs"));
        why.extend(imds_note(ev, false));
        return done(Verdict::DeviceRemoved, why, settle);
    }
    // A virtio device gone from under a PCI function that stayed: the
    // transport (virtio_pci) was unbound or unloaded; judge that device.
    let via_transport = !ev.parent_present;
    let (parent, driver, module) = if via_transport {
        why.push(format!(
            "virtio device {parent} is gone; its transport device {device} is present"
        ));
        (device, &ev.device_driver, &ev.transport)
    } else {
        (parent, &ev.parent_driver, &ev.module)
    };
    let module_note = module
        .as_ref()
        .map(|m| format!("module {} is {}", m.name, m.state.as_str()));
    if let Some(driver) = driver {
        if ev.seen_unbound {
            why.push(format!(
                "parent {parent} was re-bound to {driver}: a re-probe"
            ));
            return done(Verdict::DeviceReturned, why, settle);
        }
        if let Some(m) = module
            && m.state == ModuleState::Coming
        {
            why.push(format!(
                "parent {parent} is bound to {driver} and module {} is coming: \
                 the driver is reloading and probing it",
                m.name
            ));
            return done(Verdict::DeviceReturned, why, settle);
        }
        if ev.parent_net_dir && !via_transport {
            why.push(format!(
                "parent {parent} is present and still bound to {driver}, and keeps its net \
                 directory with no net device visible here: moved to another network namespace"
            ));
            return done(Verdict::NetdevDetached, why, settle);
        }
        // The kernel links the driver before probe() registers the net
        // device: bound with no net device at all is a probe under way.
        return match &ev.settle {
            Some(s) if s.expired => {
                why.push(format!(
                    "parent {parent} is bound to {driver} but has no net device: \
                     the driver is probing it again and has not registered one yet"
                ));
                done(Verdict::DeviceReturned, why, settle)
            }
            _ => Outcome::Unsettled(format!(
                "parent {parent} is bound to {driver} with no net device yet"
            )),
        };
    }

    why.push(format!("parent {parent} is present and unbound"));
    if let Some(m) = module {
        let unloading = match m.state {
            ModuleState::Going => Some("being unloaded"),
            ModuleState::Absent if !m.recorded_builtin => Some("no longer loaded"),
            ModuleState::Coming => Some("already loading again"),
            _ => None,
        };
        if let Some(what) = unloading {
            why.push(format!(
                "module {} is {} ({what})",
                m.name,
                m.state.as_str()
            ));
            return done(Verdict::DriverUnload, why, settle);
        }
    } else {
        why.push("driver unknown (no ID_NET_DRIVER and no record): module state not used".into());
    }
    if let Some(slot) = &ev.slot
        && slot.power == Some(false)
    {
        why.push(format!("PCI slot {} is powered off", slot.name));
        why.extend(imds_note(ev, false));
        return done(Verdict::DeviceRemoved, why, settle);
    }
    match &ev.settle {
        Some(s) if s.expired => {
            why.extend(module_note);
            if let Some(imds) = &ev.imds
                && let Presence::Detached(detail) = &imds.presence
            {
                why.push(format!("IMDS says the interface is detached: {detail}"));
                return done(Verdict::DeviceRemoved, why, settle);
            }
            why.push("still present and unbound: sysfs unbind".into());
            done(Verdict::DriverUnbind, why, settle)
        }
        _ => Outcome::Unsettled(format!(
            "parent {parent} is unbound, {}",
            module_note.unwrap_or_else(|| "module unknown".into())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{ModuleEvidence, Prior, PriorDeparture, Settle};
    use crate::sysfs::{Netdev, Slot};

    const PARENT: &str = "/devices/pci0000:00/0000:00:05.0";
    const POLICY: Policy = Policy {
        handle_virtual: false,
        return_window_ms: 300_000,
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
                "bound, net dir kept, no netdev here",
                |e| {
                    e.parent_driver = Some("ena".into());
                    e.parent_net_dir = true;
                },
                Verdict::NetdevDetached,
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
        ev.record = Some(crate::state::Record {
            name: "ens5".into(),
            mac: Some("02:00:00:00:00:05".into()),
            driver: Some("ena".into()),
            module: Some("ena".into()),
            builtin: false,
            transport: None,
            transport_builtin: false,
            devpath: format!("{PARENT}/net/ens5"),
            ifindex: Some(2),
            seen_ms: 0,
            departed: None,
        });
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
}
