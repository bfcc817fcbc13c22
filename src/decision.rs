//! The classification: a pure function from [`Evidence`] to a verdict with
//! the reasons that led to it. No I/O here; `evidence` gathers, this decides.

use crate::event::Action;
use crate::evidence::Evidence;
use crate::host::module::ModuleState;
use crate::imds::Presence;
use crate::scope::{InScope, Nic, Scope};
pub use crate::verdict::Verdict;

/// A verdict and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// How long an empty-but-present `net` directory must stay so before it
/// counts as a netns move (a registration fills it within milliseconds).
pub const NETNS_CONFIRM_MS: u64 = 50;

/// The knobs the decision depends on.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub handle_virtual: bool,
    pub return_window_ms: u64,
    /// Which NICs are ours (`manage`/`ignore`).
    pub scope: Scope,
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
    let not_a_nic = ev.virtual_dev && !policy.handle_virtual;
    if ev.action != Action::Move
        && !not_a_nic
        && let Some(why) = out_of_scope(ev, policy)
    {
        return done(Verdict::Unmanaged, vec![why], None);
    }
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

/// Why a NIC is not ours, if a selector says so from what the hook knows
/// (its name, driver, MAC, and a device-number recorded earlier). One that
/// only the device-number can decide is left to the worker.
fn out_of_scope(ev: &Evidence, policy: &Policy) -> Option<String> {
    if policy.scope.is_empty() {
        return None;
    }
    let nic = Nic {
        ifname: &ev.iface,
        driver: ev.driver.as_deref(),
        mac: ev.mac(),
        device_number: ev.record.as_ref().and_then(|r| r.device_number),
    };
    match policy.scope.judge(&nic) {
        InScope::Unmanaged(why) => Some(format!("{}: {why}", ev.iface)),
        InScope::Managed | InScope::NeedsDeviceNumber => None,
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
        if ev.parent_net_dir && !via_transport {
            // An empty `net` directory is also what a net device being
            // registered shows for a moment: look again before saying so.
            let looked_long_enough = ev
                .settle
                .as_ref()
                .is_some_and(|s| s.expired || s.elapsed_ms >= NETNS_CONFIRM_MS);
            if ev.netdevs.is_empty() && !looked_long_enough {
                return Outcome::Unsettled(format!(
                    "parent {parent} is bound to {driver} with an empty net directory: \
                     a netns move, or a net device being registered"
                ));
            }
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

/// What the worker must hear from IMDS before it reconfigures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// Nothing: reconfigure at once.
    None,
    /// `device-removed`: the MAC must be detached in IMDS.
    Detach,
    /// `new-device`: the MAC must be attached in IMDS.
    Attach,
    /// `driver-unbind` whose settle window ran out: detached in IMDS means
    /// removed after all; attached means a plain unbind (no action).
    Tiebreak,
}

impl Confirm {
    pub fn as_str(self) -> &'static str {
        match self {
            Confirm::None => "none",
            Confirm::Detach => "detach",
            Confirm::Attach => "attach",
            Confirm::Tiebreak => "tiebreak",
        }
    }

    pub fn parse(s: &str) -> Option<Confirm> {
        [
            Confirm::None,
            Confirm::Detach,
            Confirm::Attach,
            Confirm::Tiebreak,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// Which IMDS confirmation a decision needs before anything is reconfigured
/// (`None`: nothing to confirm, nothing to do). A `driver-unbind` whose
/// settle window ran out is the one transient verdict IMDS may overturn.
pub fn confirmation_for(d: &Decision, ev: &Evidence) -> Option<Confirm> {
    match d.verdict {
        Verdict::NewDevice => Some(Confirm::Attach),
        Verdict::DeviceRemoved => Some(Confirm::Detach),
        Verdict::DriverUnbind if ev.settle.as_ref().is_some_and(|s| s.expired) => {
            Some(Confirm::Tiebreak)
        }
        _ => None,
    }
}

/// What one IMDS answer means for a job waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// Reconfigure, with this verdict (a tie-break turns an unbind into a
    /// removal), and why.
    Go(Verdict, String),
    /// Nothing to reconfigure (a tie-break that found the MAC attached).
    NoAction(String),
    /// IMDS does not agree yet (it lags both ways): ask again later.
    Wait(String),
}

/// The worker's verdict from IMDS: the only other place, beside [`decide`],
/// where a verdict is made. Decisive sysfs evidence is never overruled: a
/// disagreement only delays.
pub fn confirm(how: Confirm, mac: &str, presence: &Presence) -> Confirmation {
    match (how, presence) {
        (Confirm::Detach | Confirm::Tiebreak, Presence::Detached(why)) => {
            Confirmation::Go(Verdict::DeviceRemoved, format!("IMDS agrees: {why}"))
        }
        (Confirm::Attach, Presence::Attached(a)) => Confirmation::Go(
            Verdict::NewDevice,
            format!("IMDS confirms it: device-number {}", a.device_number),
        ),
        (Confirm::Tiebreak, Presence::Attached(a)) => Confirmation::NoAction(format!(
            "IMDS still has {mac} attached (device-number {}): a sysfs unbind",
            a.device_number
        )),
        (_, Presence::Detached(why)) => Confirmation::Wait(format!("not in IMDS yet: {why}")),
        (_, Presence::Attached(a)) => Confirmation::Wait(format!(
            "IMDS still lists {mac} (device-number {})",
            a.device_number
        )),
        (_, Presence::Unknown(e)) => Confirmation::Wait(format!("IMDS could not tell: {e}")),
    }
}

/// After IMDS answered, in the worker: why a NIC is out of scope, now that
/// its device-number is known (from IMDS at attach, or recorded then). One
/// whose device-number is still unknown is left alone when a selector needs
/// it: a NIC is touched only when it is known to be ours.
pub fn unmanaged_after_imds(scope: &Scope, nic: &Nic) -> Option<String> {
    match scope.judge(nic) {
        InScope::Managed => None,
        InScope::Unmanaged(why) => Some(format!("{}: {why}", nic.ifname)),
        InScope::NeedsDeviceNumber => Some(format!(
            "{}: a selector needs its device-number, which is not known: left alone",
            nic.ifname
        )),
    }
}

#[cfg(test)]
mod tests;
