//! Every read of the host's device tree, through one configurable root.

use std::fs;
use std::io;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::error::invalid;
use crate::host::module::{ModuleState, parse_initstate};

/// The most of one sysfs attribute we read: a page, and then some.
pub const ATTR_MAX: u64 = 8192;

/// A sysfs mount (or a test tree shaped like one).
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

/// A net device as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netdev {
    pub name: String,
    pub devpath: String,
    pub mac: Option<String>,
    pub ifindex: Option<u32>,
}

/// A PCI hotplug slot that holds a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    /// `power`: false once the slot is powered off for removal.
    pub power: Option<bool>,
}

/// Errors that mean "not there (any more)": the file, or a directory on its
/// way, vanished, or the device is being torn down.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) || e.raw_os_error() == Some(nix::libc::ENODEV)
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    /// The host path of a sysfs-relative path such as `/class/net/eth0`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The host path as text, for evidence sources and messages.
    pub fn show(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.path(rel)).is_ok()
    }

    /// Reads a sysfs attribute, trimmed. `None` when it does not exist.
    /// Reads at most [`ATTR_MAX`] bytes (a sysfs attribute is at most a
    /// page), never blocks on a FIFO, and shows bytes that are not UTF-8 as
    /// U+FFFD: what a value means is for its caller to validate.
    pub fn read_attr(&self, rel: &str) -> Result<Option<String>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path(rel);
        let mut bytes = Vec::new();
        let read = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(&path)
            .and_then(|f| f.take(ATTR_MAX).read_to_end(&mut bytes));
        match read {
            Ok(_) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string())),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }

    /// The last component of a symlink's target, e.g. the driver name from
    /// `<device>/driver -> ../../bus/pci/drivers/ena`.
    pub fn link_name(&self, rel: &str) -> Option<String> {
        let target = fs::read_link(self.path(rel)).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// The driver a device is bound to, if any.
    pub fn bound_driver(&self, devpath: &str) -> Option<String> {
        self.link_name(&format!("{devpath}/driver"))
    }

    /// The module behind the driver a device is bound to
    /// (`<device>/driver/module -> .../module/<name>`).
    pub fn driver_module(&self, devpath: &str) -> Option<String> {
        self.link_name(&format!("{devpath}/driver/module"))
    }

    /// `/sys/module/<name>`: absent, built-in (no `initstate`) or its state.
    pub fn module_state(&self, module: &str) -> Result<ModuleState> {
        let dir = format!("/module/{module}");
        if !self.exists(&dir) {
            return Ok(ModuleState::Absent);
        }
        Ok(match self.read_attr(&format!("{dir}/initstate"))? {
            Some(s) => parse_initstate(&s),
            // The directory can vanish between the two reads: that is an unload.
            None if !self.exists(&dir) => ModuleState::Absent,
            None => ModuleState::Builtin,
        })
    }

    /// A net device at `devpath`, or `None` if it is not there.
    pub fn netdev(&self, devpath: &str) -> Result<Option<Netdev>> {
        if !self.path(devpath).is_dir() {
            return Ok(None);
        }
        let name = crate::event::iface_of(devpath).to_string();
        let address = format!("{devpath}/address");
        let mac = self.read_attr(&address)?.and_then(|m| {
            if crate::state::valid_mac(&m) {
                Some(m)
            } else if m.is_empty() {
                None
            } else {
                // Treated as no MAC; never copied whole into a log line.
                crate::log::warn(&format!(
                    "ignoring {}: not a link-layer address: {}",
                    self.show(&address),
                    crate::error::quote(&m)
                ));
                None
            }
        });
        let ifindex = self
            .read_attr(&format!("{devpath}/ifindex"))?
            .and_then(|s| s.parse().ok());
        Ok(Some(Netdev {
            name,
            devpath: devpath.to_string(),
            mac,
            ifindex,
        }))
    }

    /// The net devices a parent device has now (`<parent>/net/*`).
    pub fn netdevs_under(&self, parent: &str) -> Result<Vec<Netdev>> {
        let dir = format!("{parent}/net");
        let mut out = Vec::new();
        // (Dot-names stand for net devices in another namespace in test trees.)
        for name in self.list_dir(&dir)?.iter().filter(|n| !n.starts_with('.')) {
            if let Some(n) = self.netdev(&format!("{dir}/{name}"))? {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// The net devices of a physical device: its own (`<device>/net/*`) and
    /// those of its virtio children (`<device>/virtioN/net/*`).
    pub fn netdevs_of_device(&self, device: &str) -> Result<Vec<Netdev>> {
        let mut out = self.netdevs_under(device)?;
        for child in self.list_dir(device)? {
            if crate::event::is_virtio_device(&child) {
                out.extend(self.netdevs_under(&format!("{device}/{child}"))?);
            }
        }
        Ok(out)
    }

    /// Subdirectories of a sysfs directory that a listing does not show: its
    /// link count (kernfs: 2 + subdirectories in every network namespace)
    /// less the subdirectories listed. 0 when it does not exist. (Names
    /// starting with `.` are not counted as shown: test trees use them for
    /// entries hidden in another namespace.)
    pub fn hidden_subdirs(&self, rel: &str) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let path = self.path(rel);
        let links = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => m.nlink(),
            Ok(_) => return Ok(0),
            Err(e) if is_gone(&e) => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("failed to stat {}", path.display())),
        };
        let shown = self
            .list_dir(rel)?
            .iter()
            .filter(|n| !n.starts_with('.') && self.path(&format!("{rel}/{n}")).is_dir())
            .count() as u64;
        Ok(links.saturating_sub(2).saturating_sub(shown))
    }

    /// Names in a sysfs directory, sorted; empty when it does not exist.
    pub fn list_dir(&self, rel: &str) -> Result<Vec<String>> {
        let path = self.path(rel);
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if is_gone(&e) => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("failed to read {}", path.display()));
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The devpath of a present interface, from `/class/net/<iface>`.
    pub fn class_net_devpath(&self, iface: &str) -> Result<Option<String>> {
        let link = self.path(&format!("/class/net/{iface}"));
        let resolved = match fs::canonicalize(&link) {
            Ok(p) => p,
            Err(e) if is_gone(&e) => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("failed to resolve {}", link.display()));
            }
        };
        let root = self.canonical_root()?;
        let rel = resolved.strip_prefix(&root).map_err(|_| {
            invalid(format!(
                "{} points outside {}",
                link.display(),
                root.display()
            ))
        })?;
        Ok(Some(format!("/{}", rel.display())))
    }

    /// Every interface in `/class/net`.
    pub fn list_interfaces(&self) -> Result<Vec<String>> {
        self.list_dir("/class/net")
    }

    /// The PCI hotplug slot holding a PCI device, matched through
    /// `/bus/pci/slots/*/address` (`dddd:bb:dd`, the device without function).
    pub fn pci_slot(&self, devpath: &str) -> Result<Option<Slot>> {
        let name = crate::event::iface_of(devpath);
        let Some(address) = pci_slot_address(name) else {
            return Ok(None);
        };
        for slot in self.list_dir("/bus/pci/slots")? {
            let dir = format!("/bus/pci/slots/{slot}");
            if self.read_attr(&format!("{dir}/address"))?.as_deref() == Some(address) {
                let power = self
                    .read_attr(&format!("{dir}/power"))?
                    .map(|p| p.trim() != "0");
                return Ok(Some(Slot { name: slot, power }));
            }
        }
        Ok(None)
    }

    fn canonical_root(&self) -> Result<PathBuf> {
        fs::canonicalize(&self.root)
            .with_context(|| format!("failed to resolve sysfs root {}", self.root.display()))
    }

    /// Checks that a (lexically valid) devpath resolves inside the sysfs
    /// root: its deepest existing ancestor, symlinks followed, must stay
    /// under the root. A symlink loop is refused.
    pub fn check_devpath(&self, devpath: &str) -> Result<()> {
        let root = self.canonical_root()?;
        let mut probe = self.path(devpath);
        loop {
            match fs::canonicalize(&probe) {
                Ok(real) => {
                    return if real.starts_with(&root) {
                        Ok(())
                    } else {
                        Err(invalid(format!(
                            "invalid DEVPATH {devpath:?}: resolves to {}, outside the sysfs root {}",
                            real.display(),
                            root.display()
                        )))
                    };
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                    return Err(invalid(format!(
                        "invalid DEVPATH {devpath:?}: symlink loop at {}",
                        probe.display()
                    )));
                }
                Err(_) => {
                    if !probe.pop() || !probe.starts_with(&self.root) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// `0000:00:05.0` → `0000:00:05`; `None` for names that are not PCI addresses.
pub fn pci_slot_address(name: &str) -> Option<&str> {
    let (slot, func) = name.rsplit_once('.')?;
    let parts: Vec<&str> = slot.split(':').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let ok = parts.len() == 3
        && hex(parts[0], 4)
        && hex(parts[1], 2)
        && hex(parts[2], 2)
        && func.len() == 1
        && func.chars().all(|c| c.is_ascii_digit());
    ok.then_some(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_slot_addresses() {
        let table = [
            ("0000:00:05.0", Some("0000:00:05")),
            ("0000:3b:00.1", Some("0000:3b:00")),
            ("vif-0", None),
            ("virtio0", None),
            ("0000:00:05", None),
            ("000:00:05.0", None),
        ];
        for (name, want) in table {
            assert_eq!(pci_slot_address(name), want, "{name}");
        }
    }
}
