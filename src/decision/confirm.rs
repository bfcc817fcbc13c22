//! The worker's verdicts: what must be heard from IMDS before anything is
//! reconfigured, and what an answer means.

use super::Decision;
use crate::evidence::Evidence;
use crate::imds::Presence;
use crate::scope::{InScope, Nic, Scope};
use crate::verdict::Verdict;

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
