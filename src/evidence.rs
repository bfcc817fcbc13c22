//! Gathering evidence, and nothing else: sysfs, module state and our own
//! records, read into an [`Evidence`] value that `decision::decide`
//! classifies. Every fact is also kept with the path it came from, for
//! `classify`.

use serde_json::{Value, json};

use crate::event::Action;
use crate::host::cloud::Cloud;
use crate::host::module::ModuleState;
use crate::host::sysfs::{Netdev, Slot};
use crate::imds::{Presence, RequestLog};
use crate::state::Record;
use crate::verdict::Verdict;

/// One observation and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    pub name: String,
    pub value: String,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleEvidence {
    pub name: String,
    pub state: ModuleState,
    /// Our record says the module was built in when we saw the device.
    pub recorded_builtin: bool,
}

/// A recorded interface that shares the event's MAC or parent device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prior {
    pub name: String,
    pub mac: Option<String>,
    pub ifindex: Option<u32>,
    /// How it matched, for the reasons: `MAC 02:..` or `device /devices/..`.
    pub matched_by: String,
    /// Recorded on the event's physical device (not only the same MAC).
    pub same_device: bool,
    pub departed: Option<PriorDeparture>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorDeparture {
    pub verdict: Verdict,
    /// `None`: stamped in the future (by a clock we cannot compare with).
    pub age_ms: Option<u64>,
}

/// The synthetic (`hv_netvsc`) NIC an Azure VF belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synthetic {
    pub name: String,
    pub mac: String,
    /// Matched by the VF's MAC; false: the VF's MAC is not known (no
    /// record), and this is the present synthetic NIC it can belong to.
    pub by_mac: bool,
}

/// How the settle window went, when one was needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settle {
    pub elapsed_ms: u64,
    pub polls: u32,
    pub expired: bool,
}

/// What IMDS said about the interface's MAC, and the requests it took.
#[derive(Clone, Debug, PartialEq)]
pub struct ImdsEvidence {
    pub mac: String,
    pub presence: Presence,
    pub requests: Vec<RequestLog>,
}

impl ImdsEvidence {
    pub fn to_json(&self) -> Value {
        let presence = match &self.presence {
            Presence::Attached(a) => json!({
                "state": "attached",
                "device_number": a.device_number,
                "network_card_index": a.network_card_index,
                "interface_id": a.interface_id,
            }),
            Presence::Detached(why) => json!({"state": "detached", "detail": why}),
            Presence::Unknown(why) => json!({"state": "unknown", "detail": why}),
        };
        json!({
            "mac": self.mac,
            "presence": presence,
            "requests": self.requests.iter().map(RequestLog::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Everything the decision looks at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    pub action: Action,
    pub iface: String,
    pub old_name: Option<String>,
    pub devpath: Option<String>,
    pub parent: Option<String>,
    /// The physical device: the parent, or a virtio NIC's PCI function.
    pub device: Option<String>,
    pub virtual_dev: bool,
    pub event_ifindex: Option<u32>,
    /// Our record of this interface (by name), if any.
    pub record: Option<Record>,
    pub driver: Option<String>,
    pub parent_present: bool,
    pub parent_driver: Option<String>,
    /// Net devices of the parent that live in another network namespace.
    /// sysfs hides them from a directory listing, but the `net` directory's
    /// link count still counts them (kernfs: 2 + subdirectories of every
    /// namespace). An empty `net` directory with none hidden is a net device
    /// about to be registered (or a leftover), never a netns move.
    pub parent_net_hidden: u64,
    /// The physical device, when it differs from the parent (virtio).
    pub device_present: bool,
    pub device_driver: Option<String>,
    /// A virtio NIC's transport module (`virtio_pci`), when the virtio
    /// device itself is gone.
    pub transport: Option<ModuleEvidence>,
    /// An earlier poll in this invocation saw the parent unbound.
    pub seen_unbound: bool,
    /// remove: the net devices the parent has now.
    pub netdevs: Vec<Netdev>,
    /// remove: a net device of another NIC (another MAC, not a recorded
    /// sibling) on the device now.
    pub replacement: Option<Netdev>,
    /// remove of a veth: the peer left in this namespace, still linked to it.
    pub veth_peer: Option<String>,
    /// add: the interface as sysfs shows it now.
    pub netdev: Option<Netdev>,
    pub module: Option<ModuleEvidence>,
    pub slot: Option<Slot>,
    /// add: records sharing the MAC or parent.
    pub priors: Vec<Prior>,
    pub settle: Option<Settle>,
    /// Only outside udev (classify by hand, the worker).
    pub imds: Option<ImdsEvidence>,
    /// The cloud (as set, or detected from DMI), when asked for.
    pub cloud: Option<Cloud>,
    /// An Azure VF (a NIC on a Hyper-V PCI bus under VMBus): the synthetic
    /// `hv_netvsc` NIC present with its MAC.
    pub synthetic: Option<Synthetic>,
    pub facts: Vec<Fact>,
}

impl Evidence {
    /// The interface's MAC: from sysfs now, or from our record.
    pub fn mac(&self) -> Option<&str> {
        self.netdev
            .as_ref()
            .and_then(|n| n.mac.as_deref())
            .or_else(|| self.record.as_ref().and_then(|r| r.mac.as_deref()))
    }

    /// The ifindex of the net device that went away.
    pub fn gone_ifindex(&self) -> Option<u32> {
        self.event_ifindex
            .or(self.record.as_ref().and_then(|r| r.ifindex))
    }

    /// A net device under the parent that is not the one being removed: a
    /// new ifindex (the dying device can still be in sysfs with its old one)
    /// and, when we know the MAC, the same MAC.
    pub fn returned(&self) -> Option<&Netdev> {
        let known_mac = self.record.as_ref().and_then(|r| r.mac.as_deref());
        self.netdevs.iter().find(|n| {
            let new_index = match (self.gone_ifindex(), n.ifindex) {
                (Some(gone), Some(now)) => gone != now,
                _ => true,
            };
            let same_mac = match (known_mac, n.mac.as_deref()) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => true,
            };
            new_index && same_mac
        })
    }

    fn fact(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
        source: impl Into<String>,
    ) {
        self.facts.push(Fact {
            name: name.into(),
            value: value.into(),
            source: source.into(),
        });
    }

    /// The facts as JSON, for `classify --json` and the journal.
    pub fn facts_json(&self) -> Value {
        Value::Array(
            self.facts
                .iter()
                .map(|f| json!({"name": f.name, "value": f.value, "source": f.source}))
                .collect(),
        )
    }
}

mod gather;
mod records;
mod vf;

pub use gather::Gatherer;
