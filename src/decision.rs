//! The classification: a pure function from [`Evidence`] to a verdict with
//! the reasons that led to it. No I/O here; `evidence` gathers, this decides.

use crate::event::Action;
use crate::evidence::Evidence;
use crate::host::cloud::CloudSetting;
use crate::imds::Presence;
use crate::scope::{InScope, Nic, Scope};
pub use crate::verdict::Verdict;

/// A verdict and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// The knobs the decision depends on.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub handle_virtual: bool,
    pub return_window_ms: u64,
    /// Which NICs are ours (`manage`/`ignore`).
    pub scope: Scope,
    /// The `cloud` setting, for the evidence (the verdicts do not depend on
    /// it: a VF flap is told from sysfs alone).
    pub cloud: CloudSetting,
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

/// An Azure VF whose synthetic NIC is present: the VF going or coming
/// changes nothing (the synthetic NIC carries the connection, and takes
/// the traffic back while the VF is away). That also holds when
/// accelerated networking is turned off for good: the VF goes and does not
/// come back, while the synthetic NIC stays.
fn vf_flap(ev: &Evidence, what: &str) -> Option<Vec<String>> {
    let syn = ev.synthetic.as_ref()?;
    let device = ev.device.as_deref().unwrap_or("?");
    Some(vec![
        format!("{device} is a VF on a Hyper-V PCI bus (under VMBus)"),
        if syn.by_mac {
            format!(
                "its MAC {} is synthetic NIC {}'s (hv_netvsc), which is present",
                syn.mac, syn.name
            )
        } else {
            format!(
                "its MAC is not known (no record); synthetic NIC {} (hv_netvsc, MAC {}) is present",
                syn.name, syn.mac
            )
        },
        format!(
            "the VF {what} under {}: accelerated networking flapped (host servicing, \
             live migration, or turned off); nothing to reconfigure",
            syn.name
        ),
    ])
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

mod add;
mod confirm;
mod remove;

use add::decide_add;
pub use confirm::{Confirm, Confirmation, confirm, confirmation_for, unmanaged_after_imds};
use remove::decide_remove;

#[cfg(test)]
pub(crate) mod tests;
