//! What a `remove` is: the device gone, the driver unloaded or unbound,
//! the net device moved to another namespace, or already back.

use super::{Outcome, Policy, done, imds_note, vf_flap};
use crate::evidence::Evidence;
use crate::host::module::ModuleState;
use crate::imds::Presence;
use crate::verdict::Verdict;

pub(super) fn decide_remove(ev: &Evidence, policy: &Policy) -> Outcome {
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

    if let Some(flap) = vf_flap(ev, "went") {
        return done(Verdict::VfFlap, flap, None);
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
    if let Some(n) = &ev.replacement {
        why.push(format!(
            "{device} now has {} with another MAC ({}; ours was {}): another NIC took its place",
            n.name,
            n.mac.as_deref().unwrap_or("?"),
            ev.mac().unwrap_or("?")
        ));
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
        if ev.parent_net_hidden > 0 && !via_transport {
            why.push(format!(
                "parent {parent} is present and still bound to {driver}, and its net directory \
                 counts {} net device(s) not visible here: moved to another network namespace",
                ev.parent_net_hidden
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
