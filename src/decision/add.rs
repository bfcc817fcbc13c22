//! What an `add` is: a new NIC, one coming back, or a replay.

use super::{Outcome, Policy, done, imds_note, vf_flap};
use crate::evidence::Evidence;
use crate::verdict::Verdict;

pub(super) fn decide_add(ev: &Evidence, policy: &Policy) -> Outcome {
    let mut why = Vec::new();
    if ev.virtual_dev {
        if !policy.handle_virtual {
            why.push("parent is under /devices/virtual/: not a NIC".to_string());
            return done(Verdict::Virtual, why, None);
        }
        why.push("virtual device, handled as a NIC (handle_virtual)".to_string());
    }
    if let Some(flap) = vf_flap(ev, "came back") {
        return done(Verdict::VfFlap, flap, None);
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
