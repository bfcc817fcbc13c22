//! What our records add to the evidence: the NICs seen before with this
//! MAC (or, MAC-less, on this device), and whether a net device on the
//! device now is another NIC in our NIC's place.

use super::gather::Gatherer;
use super::{Evidence, Fact, Prior, PriorDeparture};

impl Gatherer<'_> {
    /// A net device on the device with another MAC than ours that is not a
    /// recorded sibling (a second port): another NIC took our NIC's place,
    /// e.g. a new ENI plugged into the slot before our remove was handled.
    pub(super) fn replacement(
        &self,
        netdevs: &[crate::host::sysfs::Netdev],
        device: &str,
    ) -> Option<crate::host::sysfs::Netdev> {
        let ours = self.record.as_ref()?.mac.as_deref()?;
        netdevs
            .iter()
            .find(|n| {
                let Some(mac) = n.mac.as_deref() else {
                    return false;
                };
                !mac.eq_ignore_ascii_case(ours)
                    && !self
                        .state
                        .records_for_mac(Some(mac), device)
                        .iter()
                        .any(|r| r.has_mac(mac) && r.device() == device && r.departed.is_none())
            })
            .cloned()
    }

    /// Records of the new NIC's MAC (on any device), and MAC-less records
    /// of its device: a device-only match is allowed only when the record
    /// has no MAC, since a different MAC is never the same NIC.
    pub(super) fn add_priors(&self, ev: &mut Evidence) {
        let now = crate::clock::boot_ms();
        let mac = ev.netdev.as_ref().and_then(|n| n.mac.clone());
        let Some(device) = ev.device.clone() else {
            return;
        };
        for r in self.state.records_for_mac(mac.as_deref(), &device) {
            let same_device = r.device() == device;
            let matched_by = match (&mac, &r.mac) {
                (Some(a), Some(_)) if r.has_mac(a) => format!("MAC {a}"),
                (_, None) if same_device => format!("device {device}"),
                _ => continue,
            };
            // A departure stamped in the future (another boot's clock) is
            // too old to count.
            let departed = r.departed.as_ref().map(|d| PriorDeparture {
                verdict: d.verdict,
                age_ms: crate::clock::age_ms(d.boot_ms, now),
            });
            ev.facts.push(Fact {
                name: format!("prior.{}", r.name),
                value: format!(
                    "{matched_by}{}",
                    departed
                        .as_ref()
                        .map(|d| match d.age_ms {
                            Some(age) => format!(", left {age} ms ago ({})", d.verdict.as_str()),
                            None => format!(", left at a future time ({})", d.verdict.as_str()),
                        })
                        .unwrap_or_else(|| format!(
                            ", present with ifindex {}",
                            r.ifindex.map_or("?".into(), |i| i.to_string())
                        ))
                ),
                source: self.state.record_path(&r.key()).display().to_string(),
            });
            ev.priors.push(Prior {
                name: r.name.clone(),
                mac: r.mac.clone(),
                ifindex: r.ifindex,
                matched_by,
                same_device,
                departed,
            });
        }
    }
}
