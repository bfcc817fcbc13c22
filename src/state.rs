//! What hotplug-hook remembers between invocations, under the state dir
//! (default `/run/hotplug-hook`, so it starts empty at boot):
//!
//! - `ifaces/<mac>/<device>.json`: one record per NIC seen at `add` or
//!   `scan` (or leaving), because at `remove` time `/sys/class/net/<name>`
//!   and its MAC are gone. See [`record_key`].
//! - `names/<iface>`: the key of the record that has that name now.
//! - `journal.jsonl` (+ `journal.jsonl.1`): one JSON line per handled event.
//! - `jobs/<id>.json`: work handed to the out-of-udev worker.
//! - `lock`: an flock serialising record updates and journal appends, since
//!   udev runs events for different NICs in parallel.
//!
//! Every file is replaced atomically (temp file + rename) or appended under
//! the lock, so a killed writer never leaves a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde_json::{Value, json};

use crate::error::{StateBusy, StateRefused};
use crate::event::Action;
use crate::verdict::Verdict;

/// The version of the record format this build reads and writes. A record
/// of another version (left in /run by another build) is skipped.
pub const RECORD_FORMAT: u64 = 2;

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

/// The state directory.
#[derive(Clone, Debug)]
pub struct State {
    dir: PathBuf,
}

/// Held while updating records or the journal.
pub struct Lock(#[allow(dead_code)] Flock<File>);

impl State {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        State { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ifaces_dir(&self) -> PathBuf {
        self.dir.join("ifaces")
    }

    /// Where the record with this key ([`record_key`]) lives.
    pub fn record_path(&self, key: &str) -> PathBuf {
        self.ifaces_dir().join(format!("{key}.json"))
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.dir.join("jobs")
    }

    /// Creates the state directory and its subdirectories if missing (0700),
    /// and refuses ([`StateRefused`]) any of them that another user owns or
    /// can write, or that is not a directory: what root reads from there
    /// steers what it does. Nothing is created below a refused directory.
    pub fn ensure(&self) -> Result<()> {
        for (d, recursive) in [
            (self.dir.clone(), true),
            (self.ifaces_dir(), false),
            (self.jobs_dir(), false),
        ] {
            if fs::symlink_metadata(&d).is_err() {
                fs::DirBuilder::new()
                    .recursive(recursive)
                    .mode(DIR_MODE)
                    .create(&d)
                    .with_context(|| format!("failed to create {}", d.display()))?;
            }
            check_dir(&d)?;
        }
        Ok(())
    }

    /// Takes the state lock, waiting at most [`LOCK_WAIT`]: holders only do
    /// a few small writes, so a longer wait means someone holds it on
    /// purpose, and udev must not be blocked by that ([`StateBusy`]).
    pub fn lock(&self) -> Result<Lock> {
        self.lock_within(LOCK_WAIT)
    }

    pub fn lock_within(&self, wait: Duration) -> Result<Lock> {
        let path = self.dir.join("lock");
        let file = open_nofollow(&path, true)?;
        // A blocking flock, interrupted by a one-shot timer: waiters queue in
        // the kernel instead of polling, and none waits past `wait`.
        let timed_out = || {
            anyhow::Error::new(StateBusy(format!(
                "{} is held by another process: gave up after {} ms",
                path.display(),
                wait.as_millis()
            )))
        };
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => return Ok(Lock(flock)),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if !wait.is_zero() => f,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(timed_out()),
            Err((_, e)) => {
                return Err(e).with_context(|| format!("failed to lock {}", path.display()));
            }
        };
        let _timer = AlarmTimer::start(wait)?;
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(flock) => Ok(Lock(flock)),
            Err((_, nix::errno::Errno::EINTR)) => Err(timed_out()),
            Err((_, e)) => Err(e).with_context(|| format!("failed to lock {}", path.display())),
        }
    }

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
        if let Some(dir) = path.parent()
            && fs::symlink_metadata(dir).is_err()
        {
            fs::DirBuilder::new()
                .mode(DIR_MODE)
                .create(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        let text = serde_json::to_string(&rec.to_json())?;
        write_atomic(&path, text.as_bytes(), FILE_MODE)?;
        let names = self.names_dir();
        if fs::symlink_metadata(&names).is_err() {
            fs::DirBuilder::new()
                .mode(DIR_MODE)
                .create(&names)
                .with_context(|| format!("failed to create {}", names.display()))?;
        }
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
            (Action::Remove, v) if v.is_transient_departure() => {
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

    /// Appends one line to the journal. The caller holds the lock. When the
    /// journal would grow past `max_bytes` it is rotated to `journal.jsonl.1`
    /// first, so the two files together stay under twice that.
    pub fn append_journal(&self, _lock: &Lock, entry: &Value, max_bytes: u64) -> Result<()> {
        let path = self.journal_path();
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .mode(FILE_MODE)
                .custom_flags(SAFE_OPEN_FLAGS)
                .open(&path)
                .with_context(|| format!("failed to open {}", path.display()))
        };
        let mut line = serde_json::to_string(entry)?;
        line.push('\n');
        let mut file = open()?;
        let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + line.len() as u64 > max_bytes {
            let old = self.dir.join("journal.jsonl.1");
            fs::rename(&path, &old)
                .with_context(|| format!("failed to rotate {}", path.display()))?;
            file = open()?;
            size = 0;
        }
        // A torn last line (a full disk, say) must not swallow this one.
        let mut last = [0u8; 1];
        if size > 0 && file.read_exact_at(&mut last, size - 1).is_ok() && last[0] != b'\n' {
            line.insert(0, '\n');
        }
        // One write call per line: with O_APPEND and the lock, lines never interleave.
        file.write_all(line.as_bytes())
            .with_context(|| format!("failed to write {}", path.display()))?;
        Ok(())
    }

    /// The last `n` well-formed journal entries, oldest first. Malformed lines
    /// (a torn tail after a crash, say) are skipped.
    pub fn journal_tail(&self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        for path in [self.dir.join("journal.jsonl.1"), self.journal_path()] {
            if let Ok(f) = OpenOptions::new()
                .read(true)
                .custom_flags(SAFE_OPEN_FLAGS)
                .open(&path)
            {
                let f = f.take(JOURNAL_READ_MAX);
                for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        out.push(v);
                    }
                }
            }
        }
        let skip = out.len().saturating_sub(n);
        out.split_off(skip)
    }
}

/// A one-shot timer whose SIGALRM goes to this thread (handled, without
/// `SA_RESTART`) and so interrupts its blocking system call; the old
/// handler is put back on drop (the timer is deleted with it).
struct AlarmTimer {
    timer: Option<nix::sys::timer::Timer>,
    old: nix::sys::signal::SigAction,
}

extern "C" fn on_alarm(_: nix::libc::c_int) {}

impl AlarmTimer {
    fn start(after: Duration) -> Result<AlarmTimer> {
        use nix::sys::signal::{
            SaFlags, SigAction, SigEvent, SigHandler, SigSet, SigevNotify, Signal, sigaction,
        };
        use nix::sys::timer::{Expiration, Timer, TimerSetTimeFlags};
        let action = SigAction::new(
            SigHandler::Handler(on_alarm),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        let old = unsafe { sigaction(Signal::SIGALRM, &action) }.context("sigaction")?;
        let event = SigEvent::new(SigevNotify::SigevThreadId {
            signal: Signal::SIGALRM,
            thread_id: nix::unistd::gettid().as_raw(),
            si_value: 0,
        });
        let armed = Timer::new(nix::time::ClockId::CLOCK_MONOTONIC, event).and_then(|mut t| {
            t.set(
                Expiration::OneShot(nix::sys::time::TimeSpec::from_duration(after)),
                TimerSetTimeFlags::empty(),
            )?;
            Ok(t)
        });
        match armed {
            Ok(timer) => Ok(AlarmTimer {
                timer: Some(timer),
                old,
            }),
            Err(e) => {
                // SAFETY: restores the handler that was there before.
                let _ = unsafe { sigaction(Signal::SIGALRM, &old) };
                Err(e).context("timer_create")
            }
        }
    }
}

impl Drop for AlarmTimer {
    fn drop(&mut self) {
        // Delete the timer first: once the old handler (maybe the default,
        // which terminates) is back, no alarm may come.
        drop(self.timer.take());
        // SAFETY: restores the handler that was there before.
        let _ =
            unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGALRM, &self.old) };
    }
}

/// Files the hook creates in its state directory are root's alone.
pub const FILE_MODE: u32 = 0o600;
pub const DIR_MODE: u32 = 0o700;
/// Records (and jobs) are small; anything larger is not ours.
pub const STATE_FILE_MAX: u64 = 64 * 1024;
/// How much of each journal file `status` reads at most.
const JOURNAL_READ_MAX: u64 = 16 << 20;
/// How long the hook waits for the state lock.
pub const LOCK_WAIT: Duration = Duration::from_millis(1000);
/// Never follow a symlink, never block on a FIFO, never leak into a child.
pub const SAFE_OPEN_FLAGS: i32 =
    nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC;

static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// State files skipped (not a regular file of ours, too large, unreadable)
/// by this process so far, for the metrics.
pub fn skipped_files() -> u64 {
    SKIPPED.load(Ordering::Relaxed)
}

fn refused(msg: String) -> anyhow::Error {
    anyhow::Error::new(StateRefused(msg))
}

/// A state directory must be a directory (not a symlink), ours, and not
/// writable by group or others.
fn check_dir(path: &Path) -> Result<()> {
    let m =
        fs::symlink_metadata(path).with_context(|| format!("failed to stat {}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.is_dir() {
        return Err(refused(format!(
            "refusing state directory {}: not a directory",
            path.display()
        )));
    }
    if m.uid() != me {
        return Err(refused(format!(
            "refusing state directory {}: owned by uid {}, not {me}",
            path.display(),
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(refused(format!(
            "refusing state directory {}: writable by group or others (mode {:04o})",
            path.display(),
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Opens (creating it 0600 if asked) a state file without following
/// symlinks or blocking, and checks it is a regular file of ours.
pub fn open_nofollow(path: &Path, create: bool) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(SAFE_OPEN_FLAGS)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    let m = file
        .metadata()
        .with_context(|| format!("failed to stat {}", path.display()))?;
    if !m.is_file() || m.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refused(format!(
            "refusing {}: not a regular file owned by us",
            path.display()
        )));
    }
    Ok(file)
}

/// Reads a state file of at most `max` bytes, opened with
/// [`SAFE_OPEN_FLAGS`] and checked with `fstat`. A missing file is `None`;
/// one that fails a check is `None` too, with a warning and a count.
pub fn read_state_file(path: &Path, max: u64) -> Option<String> {
    let skip = |why: String| {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
        crate::log::warn(&format!("skipping {}: {why}", path.display()));
        None
    };
    let file = match open_nofollow(path, false) {
        Ok(f) => f,
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::NotFound) =>
        {
            return None;
        }
        Err(e) => return skip(format!("{:#}", e.root_cause())),
    };
    match file.metadata() {
        Ok(m) if m.len() > max => return skip(format!("larger than {max} bytes")),
        Err(e) => return skip(e.to_string()),
        Ok(_) => {}
    }
    let mut text = String::new();
    match file.take(max + 1).read_to_string(&mut text) {
        Ok(n) if n as u64 > max => skip(format!("larger than {max} bytes")),
        Ok(_) => Some(text),
        Err(e) => skip(e.to_string()),
    }
}

/// Writes `bytes` to `path` atomically: a unique temp file in the same
/// directory, renamed over. Readers see the old or the new file, never a torn
/// one, even if we are killed half way. No fsync: everything here is soft
/// state on tmpfs (`/run`) that is re-derived when lost, and a sync costs
/// more than the rest of an invocation on a disk-backed dir.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("failed to create {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("failed to write {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("failed to rename {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            name: "ens5".into(),
            mac: Some("02:00:00:00:00:05".into()),
            driver: Some("ena".into()),
            module: Some("ena".into()),
            builtin: false,
            transport: None,
            transport_builtin: false,
            devpath: "/devices/pci0000:00/0000:00:05.0/net/ens5".into(),
            ifindex: Some(2),
            seen_ms: 1000,
            departed: Some(Departure {
                verdict: Verdict::DriverUnload,
                boot_ms: 2000,
            }),
        }
    }

    #[test]
    fn records_round_trip() {
        let r = sample();
        let text = serde_json::to_string(&r.to_json()).unwrap();
        assert_eq!(Record::from_json(&text), Some(r));
    }

    #[test]
    fn malformed_records_read_as_none() {
        for bad in [
            "",
            "{",
            "[]",
            "{\"name\":\"x\"}",
            "{\"name\":1,\"devpath\":\"/d\",\"seen_ms\":1}",
        ] {
            assert_eq!(Record::from_json(bad), None, "{bad:?}");
        }
        // Another format version, a bad MAC, a devpath outside /devices.
        let good = sample().to_json();
        for (k, v) in [
            ("format", json!(1)),
            ("mac", json!("02:00:00:00:00:0g")),
            ("devpath", json!("/devices/../x/net/ens5")),
        ] {
            let mut bad = good.clone();
            bad[k] = v;
            assert_eq!(Record::from_json(&bad.to_string()), None, "{k}");
        }
    }

    #[test]
    fn records_are_keyed_by_mac_and_device() {
        let r = sample();
        let virtio = Record {
            devpath: "/devices/pci0000:00/0000:00:05.0/virtio3/net/ens5".into(),
            ..sample()
        };
        // A virtio NIC's device is the PCI function: the same key.
        assert_eq!(r.key(), virtio.key());
        assert!(r.key().starts_with("020000000005/"), "{}", r.key());
        let other_mac = Record {
            mac: Some("02:00:00:00:00:06".into()),
            ..sample()
        };
        assert_ne!(r.key(), other_mac.key());
        let other_slot = Record {
            devpath: "/devices/pci0000:00/0000:00:06.0/net/ens5".into(),
            ..sample()
        };
        assert_ne!(r.key(), other_slot.key());
        assert!(record_key(None, r.device()).starts_with("nomac/"));
    }

    fn update(action: Action, verdict: Verdict, prior: Option<Record>) -> Update {
        Update {
            action,
            verdict,
            iface: "ens5".into(),
            old_iface: None,
            devpath: Some(sample().devpath),
            ifindex: Some(2),
            present: None,
            prior,
            driver: Some("ena".into()),
            module: Some("ena".into()),
        }
    }

    #[test]
    fn apply_follows_the_nic() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::new(dir.path());
        st.ensure().unwrap();
        let lock = st.lock().unwrap();
        let present = Record {
            departed: None,
            ..sample()
        };
        let mut add = update(Action::Add, Verdict::NewDevice, None);
        add.present = Some(present.clone());
        st.apply(&lock, &add).unwrap();
        assert_eq!(
            st.record_for("ens5", Some(&present.devpath)),
            Some(present.clone())
        );

        // A late remove of an older incarnation (ifindex 1) changes nothing.
        let mut late = update(Action::Remove, Verdict::DriverUnload, Some(present.clone()));
        late.ifindex = Some(1);
        st.apply(&lock, &late).unwrap();
        assert_eq!(st.record_for("ens5", None), Some(present.clone()));

        // The remove of this one marks it departed.
        st.apply(
            &lock,
            &update(Action::Remove, Verdict::DriverUnload, Some(present.clone())),
        )
        .unwrap();
        let r = st.record_for("ens5", None).unwrap();
        assert_eq!(r.departed.unwrap().verdict, Verdict::DriverUnload);

        // A rename moves it; a removal drops it.
        let mut mv = update(Action::Move, Verdict::Renamed, Some(present.clone()));
        mv.iface = "lan0".into();
        mv.devpath = Some("/devices/pci0000:00/0000:00:05.0/net/lan0".into());
        st.apply(&lock, &mv).unwrap();
        assert_eq!(st.record_for("ens5", None), None);
        let r = st.record_for("lan0", None).unwrap();
        st.apply(
            &lock,
            &update(Action::Remove, Verdict::DeviceRemoved, Some(r)),
        )
        .unwrap();
        assert!(st.records().is_empty());

        // A remove with no record leaves a MAC-less record of its device,
        // superseded by the next NIC added there.
        st.apply(&lock, &update(Action::Remove, Verdict::DriverUnbind, None))
            .unwrap();
        let stub = st.record_for("ens5", Some(&present.devpath)).unwrap();
        assert_eq!(
            (stub.mac, stub.departed.unwrap().verdict),
            (None, Verdict::DriverUnbind)
        );
        st.apply(&lock, &add).unwrap();
        assert_eq!(st.records(), vec![present]);
    }

    #[test]
    fn journal_rotates_and_tail_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::new(dir.path());
        st.ensure().unwrap();
        let lock = st.lock().unwrap();
        for i in 0..50 {
            st.append_journal(&lock, &json!({"n": i}), 400).unwrap();
        }
        let total = fs::metadata(st.journal_path()).unwrap().len()
            + fs::metadata(dir.path().join("journal.jsonl.1"))
                .unwrap()
                .len();
        assert!(total <= 800, "journal grew to {total} bytes");
        // A torn last line (writer killed) is skipped, not fatal.
        fs::OpenOptions::new()
            .append(true)
            .open(st.journal_path())
            .unwrap()
            .write_all(b"{\"n\": 5")
            .unwrap();
        let tail = st.journal_tail(3);
        let ns: Vec<u64> = tail.iter().map(|v| v["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, vec![47, 48, 49]);
        // The next append starts on a line of its own.
        st.append_journal(&lock, &json!({"n": 50}), 1 << 20)
            .unwrap();
        let tail = st.journal_tail(2);
        let ns: Vec<u64> = tail.iter().map(|v| v["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, vec![49, 50]);
    }
}
