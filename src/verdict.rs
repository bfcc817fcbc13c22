//! What an event turned out to be. A type of its own, with no dependencies,
//! so records (`state`) and the decision can both name it without a cycle.

/// What an event turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A virtual device (veth, bridge, vlan...): ignored by default.
    Virtual,
    /// The device came back (driver reload, rebind, return from a netns).
    DeviceReturned,
    /// The device is gone: PCI hot-unplug, ENI detach, Xen vif removal.
    DeviceRemoved,
    /// The net device left the host's namespace; its parent is still bound.
    NetdevDetached,
    /// The driver's module is being (or was) unloaded.
    DriverUnload,
    /// The device was unbound from its driver (sysfs `unbind`).
    DriverUnbind,
    /// A device not seen before (or seen leaving for good).
    NewDevice,
    /// An add for an interface already recorded as present with the same
    /// MAC and ifindex: a replayed event (`udevadm trigger`).
    AlreadyKnown,
    /// A rename (`move`).
    Renamed,
    /// An add for a net device that is no longer in sysfs; its remove follows.
    StaleEvent,
    /// Out of scope: a `manage`/`ignore` selector says it is not ours.
    Unmanaged,
    /// Azure accelerated networking: the SR-IOV VF of a synthetic
    /// (`hv_netvsc`) NIC that is present with the same MAC went or came
    /// back. The synthetic NIC carries the connection: nothing to do.
    VfFlap,
}

impl Verdict {
    pub const ALL: [Verdict; 12] = [
        Verdict::Virtual,
        Verdict::DeviceReturned,
        Verdict::DeviceRemoved,
        Verdict::NetdevDetached,
        Verdict::DriverUnload,
        Verdict::DriverUnbind,
        Verdict::NewDevice,
        Verdict::AlreadyKnown,
        Verdict::Renamed,
        Verdict::StaleEvent,
        Verdict::Unmanaged,
        Verdict::VfFlap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Virtual => "virtual",
            Verdict::DeviceReturned => "device-returned",
            Verdict::DeviceRemoved => "device-removed",
            Verdict::NetdevDetached => "netdev-detached",
            Verdict::DriverUnload => "driver-unload",
            Verdict::DriverUnbind => "driver-unbind",
            Verdict::NewDevice => "new-device",
            Verdict::AlreadyKnown => "already-known",
            Verdict::Renamed => "renamed",
            Verdict::StaleEvent => "stale-event",
            Verdict::Unmanaged => "unmanaged",
            Verdict::VfFlap => "vf-flap",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Only these two change the host's network and need reconfiguration.
    pub fn triggers_reconfig(self) -> bool {
        matches!(self, Verdict::NewDevice | Verdict::DeviceRemoved)
    }

    /// A remove with this verdict may be followed by the device's return.
    pub fn is_transient_departure(self) -> bool {
        matches!(
            self,
            Verdict::DriverUnload | Verdict::DriverUnbind | Verdict::NetdevDetached
        )
    }
}
