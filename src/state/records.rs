//! Records: what hotplug-hook remembers of each NIC between invocations,
//! because at `remove` time `/sys/class/net/<name>` and its MAC are gone.
//! Keyed by MAC and physical device; found by MAC (one small directory) or
//! by name (`names/<iface>`), never by reading every record on an event's
//! path; changed only through [`State::apply`].

use std::fs;
use std::io;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{
    FILE_MODE, Lock, STATE_FILE_MAX, State, create_dir, now_ms, read_state_file, write_atomic,
};
use crate::event::Action;
use crate::verdict::Verdict;

/// What we know about one NIC. A record is keyed by the NIC's MAC and its
/// physical device ([`crate::event::device_of`]): a different MAC is never
/// the same NIC, but one MAC can belong to two NICs at once (Azure's
/// synthetic NIC and its VF share it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub mac: Option<String>,
    pub driver: Option<String>,
    pub module: Option<String>,
    /// The module had no `initstate` (built in), so it cannot be unloaded.
    pub builtin: bool,
    /// A virtio NIC's transport module (`virtio_pci`): unloading or
    /// unbinding it removes the virtio device under a PCI function that stays.
    pub transport: Option<String>,
    pub transport_builtin: bool,
    /// EC2's IMDS device-number, recorded by the worker when it confirms an
    /// attach (a detached ENI's keys answer 404, so it is learnt then).
    pub device_number: Option<u32>,
    pub devpath: String,
    pub ifindex: Option<u32>,
    /// Wall-clock time it was last seen present, for people.
    pub seen_ms: u64,
    pub departed: Option<Departure>,
}

/// The NIC went away with a transient verdict (it may come back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    pub verdict: Verdict,
    /// [`crate::clock::boot_ms`] when it left: a clock that does not step.
    pub boot_ms: u64,
}

impl Record {
    pub fn to_json(&self) -> Value {
        json!({
            "format": RECORD_FORMAT,
            "name": self.name,
            "mac": self.mac,
            "driver": self.driver,
            "module": self.module,
            "builtin": self.builtin,
            "transport": self.transport,
            "transport_builtin": self.transport_builtin,
            "device_number": self.device_number,
            "devpath": self.devpath,
            "ifindex": self.ifindex,
            "seen_ms": self.seen_ms,
            "departed": self.departed.as_ref().map(|d| json!({"verdict": d.verdict.as_str(), "boot_ms": d.boot_ms})),
        })
    }

    /// Parses a record file; `None` for anything malformed or of another
    /// format version.
    pub fn from_json(text: &str) -> Option<Record> {
        let v: Value = serde_json::from_str(text).ok()?;
        if v.get("format")?.as_u64()? != RECORD_FORMAT {
            return None;
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let departed = match v.get("departed") {
            Some(Value::Object(d)) => Some(Departure {
                verdict: Verdict::parse(d.get("verdict")?.as_str()?)?,
                boot_ms: d.get("boot_ms")?.as_u64()?,
            }),
            Some(Value::Null) | None => None,
            Some(_) => return None,
        };
        let devpath = s("devpath")?;
        crate::event::validate_devpath(&devpath).ok()?;
        let mac = s("mac");
        if mac.as_deref().is_some_and(|m| !valid_mac(m)) {
            return None;
        }
        Some(Record {
            name: s("name")?,
            mac,
            driver: s("driver"),
            module: s("module"),
            builtin: v.get("builtin").and_then(Value::as_bool).unwrap_or(false),
            transport: s("transport"),
            transport_builtin: v
                .get("transport_builtin")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            device_number: v
                .get("device_number")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
            devpath,
            ifindex: v
                .get("ifindex")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
            seen_ms: v.get("seen_ms")?.as_u64()?,
            departed,
        })
    }

    /// The parent device's devpath.
    pub fn parent(&self) -> &str {
        crate::event::parent_of(&self.devpath)
    }

    /// The physical device (the PCI function of a virtio NIC).
    pub fn device(&self) -> &str {
        crate::event::device_of(&self.devpath)
    }

    pub fn key(&self) -> String {
        record_key(self.mac.as_deref(), self.device())
    }

    /// Same MAC (case-insensitive).
    pub fn has_mac(&self, mac: &str) -> bool {
        self.mac
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(mac))
    }
}

/// A link-layer address as sysfs prints it: hex pairs separated by colons,
/// at most 32 bytes.
pub fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    (1..=32).contains(&parts.len())
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A record's path below `ifaces/` (without `.json`): `<mac hex>/<device
/// hash>`, or `nomac/<device hash>` for a NIC that left before we learnt its
/// MAC. The records of a MAC are one small directory, whatever the number of
/// records; `names/<iface>` holds the key of the NIC that has that name.
pub fn record_key(mac: Option<&str>, device: &str) -> String {
    format!("{}/{:016x}", mac_dir(mac), fnv1a(device.as_bytes()))
}

fn mac_dir(mac: Option<&str>) -> String {
    match mac {
        Some(m) if valid_mac(m) => m.replace(':', "").to_ascii_lowercase(),
        _ => "nomac".to_string(),
    }
}

/// FNV-1a, 64 bit: a stable, dependency-free name for a device path.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What an event (or the worker) concluded, with the facts a record needs.
/// [`State::apply`] is the one place records change.
#[derive(Clone, Debug)]
pub struct Update {
    pub action: Action,
    pub verdict: Verdict,
    pub iface: String,
    /// The old name of a rename.
    pub old_iface: Option<String>,
    pub devpath: Option<String>,
    /// The ifindex the event was about (for a remove: the one that left).
    pub ifindex: Option<u32>,
    /// The NIC as it is now, for an add or a scan.
    pub present: Option<Record>,
    /// The record the event matched, if any.
    pub prior: Option<Record>,
    pub driver: Option<String>,
    pub module: Option<String>,
}

/// The version of the record format this build reads and writes. A record
/// of another version (left in /run by another build) is skipped.
pub const RECORD_FORMAT: u64 = 2;

impl State {
    /// Reads one record; a missing or malformed file reads as `None`
    /// (malformed ones are logged).
    fn read_record(&self, key: &str) -> Option<Record> {
        let path = self.record_path(key);
        let text = read_state_file(&path, STATE_FILE_MAX)?;
        let rec = Record::from_json(&text).filter(|r| r.key() == key);
        if rec.is_none() {
            crate::log::warn(&format!("ignoring malformed record {}", path.display()));
        }
        rec
    }

    fn names_dir(&self) -> PathBuf {
        self.dir.join("names")
    }

    fn read_all(&self, keys: impl IntoIterator<Item = String>) -> Vec<Record> {
        keys.into_iter()
            .filter_map(|k| self.read_record(&k))
            .collect()
    }

    /// The keys in one `ifaces/<mac>/` directory.
    fn keys_in(&self, mac_dir: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.ifaces_dir().join(mac_dir)) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let hash = name.to_str()?.strip_suffix(".json")?;
                (!hash.starts_with('.')).then(|| format!("{mac_dir}/{hash}"))
            })
            .collect();
        keys.sort();
        keys
    }

    /// All readable records, by name (status, scan, a by-hand `handle`):
    /// reads every record, so never on an event's path.
    pub fn records(&self) -> Vec<Record> {
        let dirs = fs::read_dir(self.ifaces_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut out: Vec<Record> = dirs
            .iter()
            .flat_map(|d| self.read_all(self.keys_in(d)))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.key().cmp(&b.key())));
        out
    }

    /// The records of a MAC (on any device), and the MAC-less record of
    /// `device`: the candidates for "the NIC seen before".
    pub fn records_for_mac(&self, mac: Option<&str>, device: &str) -> Vec<Record> {
        let mut keys = match mac.filter(|m| valid_mac(m)) {
            Some(m) => self.keys_in(&mac_dir(Some(m))),
            None => Vec::new(),
        };
        keys.push(record_key(None, device));
        self.read_all(keys)
    }

    /// The record that has the name `iface` now, from the name index.
    fn record_named(&self, iface: &str) -> Option<Record> {
        crate::event::validate_iface(iface).ok()?;
        let key = read_state_file(&self.names_dir().join(iface), 256)?;
        let key = key.trim();
        let valid = key.split_once('/').is_some_and(|(m, h)| {
            (m == "nomac" || m.bytes().all(|b| b.is_ascii_hexdigit()))
                && h.len() == 16
                && h.bytes().all(|b| b.is_ascii_hexdigit())
        });
        valid
            .then(|| self.read_record(key))
            .flatten()
            .filter(|r| r.name == iface)
    }

    /// The record of interface `iface` (on `devpath`'s device, when known):
    /// the NIC that has that name, or the MAC-less record of the device.
    pub fn record_for(&self, iface: &str, devpath: Option<&str>) -> Option<Record> {
        let device = devpath.map(crate::event::device_of);
        self.record_named(iface)
            .filter(|r| device.is_none_or(|d| r.device() == d))
            .or_else(|| {
                self.read_record(&record_key(None, device?))
                    .filter(|r| r.name == iface)
            })
    }

    fn save_record(&self, rec: &Record) -> Result<()> {
        let key = rec.key();
        let path = self.record_path(&key);
        if let Some(dir) = path.parent() {
            create_dir(dir, false)?;
        }
        let text = serde_json::to_string(&rec.to_json())?;
        write_atomic(&path, text.as_bytes(), FILE_MODE)?;
        let names = self.names_dir();
        create_dir(&names, false)?;
        write_atomic(&names.join(&rec.name), key.as_bytes(), FILE_MODE)
    }

    fn delete_record(&self, rec: &Record) -> Result<()> {
        let key = rec.key();
        let path = self.record_path(&key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("failed to remove {}", path.display()));
            }
        }
        // An empty MAC directory goes too (fails harmlessly when not empty).
        if let Some(dir) = path.parent() {
            let _ = fs::remove_dir(dir);
        }
        self.unname(&rec.name, &key);
        Ok(())
    }

    /// The name no longer belongs to record `key` (unless another took it).
    fn unname(&self, name: &str, key: &str) {
        let path = self.names_dir().join(name);
        if read_state_file(&path, 256).is_some_and(|k| k.trim() == key) {
            let _ = fs::remove_file(path);
        }
    }

    /// The one place records change, for every verdict from `handle`, `scan`
    /// and the worker. The caller holds the lock; the record the update
    /// matched is read again under it, so an event handled late (the NIC is
    /// back with another ifindex) never overwrites what a newer one wrote.
    pub fn apply(&self, _lock: &Lock, u: &Update) -> Result<()> {
        let current = u.prior.as_ref().and_then(|p| self.read_record(&p.key()));
        // Still the incarnation that the event saw leave?
        let same_incarnation = |r: &Record| {
            r.departed.is_some()
                || match (r.ifindex, u.ifindex) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        };
        match (u.action, u.verdict) {
            (_, Verdict::Virtual | Verdict::StaleEvent) => Ok(()),
            (Action::Add, _) => {
                let Some(rec) = &u.present else {
                    return Ok(());
                };
                // A NIC now in this device supersedes the one that had its
                // name there, and the device's MAC-less record.
                let stub = self.read_record(&record_key(None, rec.device()));
                let named = self
                    .record_named(&rec.name)
                    .filter(|r| r.device() == rec.device());
                for old in stub.into_iter().chain(named) {
                    if old.key() != rec.key() {
                        self.delete_record(&old)?;
                    }
                }
                self.save_record(rec)
            }
            (Action::Remove, Verdict::DeviceRemoved) => match current {
                Some(r) if same_incarnation(&r) => self.delete_record(&r),
                _ => Ok(()),
            },
            // A VF flap is kept on the VF's own record (keyed by its MAC
            // and device, never the synthetic NIC's): departed, not deleted.
            (Action::Remove, v) if v.is_transient_departure() || v == Verdict::VfFlap => {
                let mut rec = match current {
                    Some(r) if !same_incarnation(&r) => return Ok(()),
                    Some(r) => r,
                    None => Record {
                        name: u.iface.clone(),
                        mac: None,
                        driver: u.driver.clone(),
                        module: u.module.clone(),
                        builtin: false,
                        transport: None,
                        transport_builtin: false,
                        device_number: None,
                        devpath: u.devpath.clone().unwrap_or_default(),
                        ifindex: u.ifindex,
                        seen_ms: now_ms(),
                        departed: None,
                    },
                };
                if crate::event::validate_devpath(&rec.devpath).is_err() {
                    return Ok(());
                }
                rec.departed = Some(Departure {
                    verdict: v,
                    boot_ms: crate::clock::boot_ms(),
                });
                self.save_record(&rec)
            }
            (Action::Move, _) => {
                let (Some(mut rec), Some(devpath)) = (current, &u.devpath) else {
                    return Ok(());
                };
                let old = rec.clone();
                rec.name = u.iface.clone();
                rec.devpath = devpath.clone();
                if rec.key() != old.key() {
                    self.delete_record(&old)?;
                } else {
                    self.unname(&old.name, &old.key());
                }
                self.save_record(&rec)
            }
            (Action::Remove, _) => Ok(()),
        }
    }
}
