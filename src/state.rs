//! What hotplug-hook remembers between invocations, under the state dir
//! (default `/run/hotplug-hook`, so it starts empty at boot):
//!
//! - `ifaces/<name>.json`: one record per interface seen at `add` or `scan`,
//!   because at `remove` time `/sys/class/net/<name>` and its MAC are gone.
//! - `journal.jsonl` (+ `journal.jsonl.1`): one JSON line per handled event.
//! - `jobs/<id>.json`: work handed to the out-of-udev worker.
//! - `lock`: an flock serialising record updates and journal appends, since
//!   udev runs events for different NICs in parallel.
//!
//! Every file is replaced atomically (temp file + rename) or appended under
//! the lock, so a killed writer never leaves a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde_json::{Value, json};

/// What we know about one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub mac: Option<String>,
    pub driver: Option<String>,
    pub module: Option<String>,
    /// The module had no `initstate` (built in), so it cannot be unloaded.
    pub builtin: bool,
    pub devpath: String,
    pub ifindex: Option<u32>,
    pub seen_ms: u64,
    pub departed: Option<Departure>,
}

/// The interface went away with a transient verdict (it may come back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    pub verdict: String,
    pub at_ms: u64,
}

impl Record {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "mac": self.mac,
            "driver": self.driver,
            "module": self.module,
            "builtin": self.builtin,
            "devpath": self.devpath,
            "ifindex": self.ifindex,
            "seen_ms": self.seen_ms,
            "departed": self.departed.as_ref().map(|d| json!({"verdict": d.verdict, "at_ms": d.at_ms})),
        })
    }

    /// Parses a record file; `None` for anything malformed.
    pub fn from_json(text: &str) -> Option<Record> {
        let v: Value = serde_json::from_str(text).ok()?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let departed = match v.get("departed") {
            Some(Value::Object(d)) => Some(Departure {
                verdict: d.get("verdict")?.as_str()?.to_string(),
                at_ms: d.get("at_ms")?.as_u64()?,
            }),
            _ => None,
        };
        Some(Record {
            name: s("name")?,
            mac: s("mac"),
            driver: s("driver"),
            module: s("module"),
            builtin: v.get("builtin").and_then(Value::as_bool).unwrap_or(false),
            devpath: s("devpath")?,
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

    /// Where the record of interface `name` lives.
    pub fn record_path(&self, name: &str) -> PathBuf {
        self.ifaces_dir().join(format!("{name}.json"))
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.dir.join("jobs")
    }

    /// Creates the state directory and its subdirectories if missing.
    pub fn ensure(&self) -> Result<()> {
        for d in [self.ifaces_dir(), self.jobs_dir()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&d)
                .with_context(|| format!("failed to create {}", d.display()))?;
        }
        Ok(())
    }

    /// Takes the state lock (blocking; holders only do a few small writes).
    pub fn lock(&self) -> Result<Lock> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("failed to open {}", path.display()))?;
        let flock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("failed to lock {}", path.display()))?;
        Ok(Lock(flock))
    }

    /// Reads one record; a missing or malformed file reads as `None`
    /// (malformed ones are reported through `on_corrupt`).
    pub fn record(&self, name: &str) -> Option<Record> {
        let text = fs::read_to_string(self.record_path(name)).ok()?;
        let rec = Record::from_json(&text);
        if rec.is_none() {
            crate::log::warn(&format!(
                "ignoring malformed record {}",
                self.record_path(name).display()
            ));
        }
        rec
    }

    /// All readable records.
    pub fn records(&self) -> Vec<Record> {
        let Ok(entries) = fs::read_dir(self.ifaces_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<Record> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let iface = name.strip_suffix(".json")?;
                self.record(iface)
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn save_record(&self, rec: &Record) -> Result<()> {
        let text = serde_json::to_string(&rec.to_json())?;
        write_atomic(&self.record_path(&rec.name), text.as_bytes(), 0o644)
    }

    pub fn delete_record(&self, name: &str) -> Result<()> {
        let path = self.record_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("failed to remove {}", path.display())),
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
                .mode(0o644)
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
            if let Ok(f) = File::open(&path) {
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
            devpath: "/devices/pci0000:00/0000:00:05.0/net/ens5".into(),
            ifindex: Some(2),
            seen_ms: 1000,
            departed: Some(Departure {
                verdict: "driver-unload".into(),
                at_ms: 2000,
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
