//! The event we were asked to handle: read from the udev environment or from
//! flags, and validated before anything touches sysfs or state.

use std::ffi::OsString;

use anyhow::Result;

use crate::error::{invalid, quote};

/// The uevent actions hotplug-hook acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Action {
    #[default]
    Add,
    Remove,
    Move,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
            Action::Move => "move",
        }
    }

    /// Parses an action name; `Ok(None)` for kernel actions we do not handle.
    pub fn parse(s: &str) -> Result<Option<Action>> {
        Ok(match s {
            "add" => Some(Action::Add),
            "remove" => Some(Action::Remove),
            "move" => Some(Action::Move),
            "change" | "bind" | "unbind" | "online" | "offline" => None,
            other => return Err(invalid(format!("unknown ACTION {}", quote(other)))),
        })
    }
}

/// A validated net event.
#[derive(Clone, Debug)]
pub struct Event {
    pub action: Action,
    pub iface: String,
    /// `/devices/.../net/<iface>`; `None` when run by hand without one.
    pub devpath: Option<String>,
    pub ifindex: Option<u32>,
    /// `ID_NET_DRIVER`, the driver name ethtool reports (e.g. `ena`, `vif`).
    pub driver: Option<String>,
    pub seqnum: Option<u64>,
    /// The old name on a move: `INTERFACE_OLD`, or the last component of
    /// `DEVPATH_OLD` (what the kernel sends).
    pub iface_old: Option<String>,
    /// True when the udev environment supplied the event (`ACTION` was set).
    pub from_udev: bool,
}

impl Event {
    /// The parent device's devpath: the event's DEVPATH without `/net/<iface>`.
    pub fn parent(&self) -> Option<&str> {
        self.devpath.as_deref().map(parent_of)
    }
}

/// Values given on the command line; each overrides its udev variable.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub iface: Option<String>,
    pub action: Option<String>,
    pub devpath: Option<String>,
    pub driver: Option<String>,
    pub ifindex: Option<String>,
}

/// What the inputs asked for.
#[derive(Debug)]
pub enum Parsed {
    Event(Event),
    /// Not ours (another subsystem, an action we do not handle): exit 0.
    Ignored(String),
}

/// Reads the event from `env` (the udev environment) and `ov` (flags).
///
/// `infer_action` is asked for the action when neither `ACTION` nor
/// `--action` gives one (a by-hand `handle --iface eth1`).
pub fn parse(
    env: &dyn Fn(&str) -> Option<OsString>,
    ov: &Overrides,
    infer_action: &mut dyn FnMut(&str) -> Result<Action>,
) -> Result<Parsed> {
    let var = |name: &str| -> Result<Option<String>> {
        match env(name) {
            None => Ok(None),
            Some(v) => v
                .into_string()
                .map(Some)
                .map_err(|_| invalid(format!("{name} is not valid UTF-8"))),
        }
    };

    if let Some(subsystem) = var("SUBSYSTEM")?
        && subsystem != "net"
    {
        return Ok(Parsed::Ignored(format!(
            "subsystem {} is not net",
            quote(&subsystem)
        )));
    }

    let env_action = var("ACTION")?;
    let from_udev = env_action.is_some();
    let action_name = ov.action.clone().or(env_action);
    let action = match &action_name {
        Some(name) => match Action::parse(name)? {
            Some(a) => Some(a),
            None => {
                return Ok(Parsed::Ignored(format!(
                    "action {} is not handled",
                    quote(name)
                )));
            }
        },
        None => None,
    };

    let devpath = ov.devpath.clone().or(var("DEVPATH")?);
    if let Some(d) = &devpath {
        validate_devpath(d)?;
    }
    let iface = match ov.iface.clone().or(var("INTERFACE")?) {
        Some(i) => i,
        None => match &devpath {
            Some(d) => iface_of(d).to_string(),
            None => {
                return Err(invalid(
                    "no interface: set INTERFACE (udev) or pass --iface",
                ));
            }
        },
    };
    validate_iface(&iface)?;
    if let Some(d) = &devpath
        && iface_of(d) != iface
    {
        return Err(invalid(format!(
            "DEVPATH {} does not end in /net/{iface}",
            quote(d)
        )));
    }

    // udev sets INTERFACE_OLD only on the add it renamed; the kernel's own
    // `move` (a rename, or a NIC returning from a netns) carries DEVPATH_OLD.
    let iface_old = match var("INTERFACE_OLD")? {
        Some(old) => Some(old),
        None => match var("DEVPATH_OLD")? {
            Some(d) => {
                validate_devpath(&d)?;
                Some(iface_of(&d).to_string())
            }
            None => None,
        },
    };
    if let Some(old) = &iface_old {
        validate_iface(old)?;
    }
    let ifindex =
        match ov.ifindex.clone().or(var("IFINDEX")?) {
            Some(s) => Some(s.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                invalid(format!("IFINDEX {} is not a positive integer", quote(&s)))
            })?),
            None => None,
        };
    let driver = ov.driver.clone().or(var("ID_NET_DRIVER")?);
    if let Some(d) = &driver {
        validate_driver(d)?;
    }
    let seqnum = match var("SEQNUM")? {
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| invalid(format!("SEQNUM {} is not an integer", quote(&s))))?,
        ),
        None => None,
    };

    let action = match action {
        Some(a) => a,
        None => infer_action(&iface)?,
    };
    if action == Action::Move && iface_old.is_none() && from_udev {
        return Err(invalid("move event without DEVPATH_OLD or INTERFACE_OLD"));
    }

    Ok(Parsed::Event(Event {
        action,
        iface,
        devpath,
        ifindex,
        driver,
        seqnum,
        iface_old,
        from_udev,
    }))
}

/// Validates an interface name the way the kernel's `dev_valid_name()` does:
/// 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace. We also refuse
/// control characters, which no sane tool creates and which would corrupt logs.
pub fn validate_iface(name: &str) -> Result<()> {
    let bad = |why: &str| invalid(format!("invalid interface name {}: {why}", quote(name)));
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 15 {
        return Err(bad("longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("reserved name"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(bad(&format!("contains {c:?}")));
    }
    Ok(())
}

/// Lexical checks on a DEVPATH: absolute, under `/devices/`, no empty, `.` or
/// `..` components, ends in `/net/<name>`. Whether it resolves inside the
/// sysfs root is checked by [`crate::host::sysfs::Sysfs::check_devpath`].
pub fn validate_devpath(devpath: &str) -> Result<()> {
    let bad = |why: &str| invalid(format!("invalid DEVPATH {}: {why}", quote(devpath)));
    if devpath.len() > 4096 {
        return Err(bad("too long"));
    }
    let Some(rest) = devpath.strip_prefix("/devices/") else {
        return Err(bad("not under /devices/"));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    for p in &parts {
        match *p {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("contains a . or .. component")),
            _ if p.chars().any(|c| c.is_control()) => {
                return Err(bad("contains a control character"));
            }
            _ => {}
        }
    }
    if parts.len() < 2 || parts[parts.len() - 2] != "net" {
        return Err(bad("not a net device (expected .../net/<interface>)"));
    }
    Ok(())
}

/// A driver (module-like) name, as `ID_NET_DRIVER` gives it: 1 to 64
/// bytes of `[A-Za-z0-9_.-]`, starting with a letter or digit (so never `.`,
/// `..` or anything hidden or path-like).
pub fn validate_driver(value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid ID_NET_DRIVER {}: not a driver name",
            quote(value)
        )))
    }
}

/// `/devices/x/net/eth0` → `eth0`. Assumes a validated devpath.
pub fn iface_of(devpath: &str) -> &str {
    devpath.rsplit('/').next().unwrap_or(devpath)
}

/// `/devices/x/net/eth0` → `/devices/x`. Assumes a validated devpath.
pub fn parent_of(devpath: &str) -> &str {
    let without_iface = devpath.rsplit_once('/').map_or(devpath, |(a, _)| a);
    without_iface
        .rsplit_once('/')
        .map_or(without_iface, |(a, _)| a)
}

/// The physical device a net device belongs to: its parent, except that a
/// virtio NIC's parent (`virtioN`) is a child of the transport device (the
/// PCI function), which is what a hot-unplug removes. For a virtual device,
/// the devpath itself (they all share `/devices/virtual/net`).
pub fn device_of(devpath: &str) -> &str {
    if is_virtual(devpath) {
        return devpath;
    }
    let parent = parent_of(devpath);
    match parent.rsplit_once('/') {
        Some((up, last)) if is_virtio_device(last) => up,
        _ => parent,
    }
}

/// `virtio0`, `virtio12`: a device on the virtio bus.
pub fn is_virtio_device(name: &str) -> bool {
    name.strip_prefix("virtio")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// True for devices the kernel parents under `/devices/virtual/` (veth,
/// bridge, vlan, bond, tun, ...).
pub fn is_virtual(devpath: &str) -> bool {
    devpath.starts_with("/devices/virtual/")
}

#[cfg(test)]
mod tests;
