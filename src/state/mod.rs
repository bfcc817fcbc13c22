//! What hotplug-hook remembers between invocations, under the state dir
//! (default `/run/hotplug-hook`, so it starts empty at boot):
//!
//! - `ifaces/<mac>/<device>.json`: one record per NIC seen at `add` or
//!   `scan` (or leaving), because at `remove` time `/sys/class/net/<name>`
//!   and its MAC are gone. See [`records`].
//! - `names/<iface>`: the key of the record that has that name now.
//! - `journal.jsonl` (+ `journal.jsonl.1`): one JSON line per handled event.
//! - `jobs/<id>.json`: work handed to the out-of-udev worker.
//! - `lock`: an flock serialising record updates and journal appends, since
//!   udev runs events for different NICs in parallel.
//!
//! Every file is replaced atomically (temp file + rename) or appended under
//! the lock, so a killed writer never leaves a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::error::{StateBusy, StateRefused};

mod journal;
mod records;

pub use records::{Departure, RECORD_FORMAT, Record, Update, record_key, valid_mac};

/// The state directory.
#[derive(Clone, Debug)]
pub struct State {
    dir: PathBuf,
    lock_wait: Duration,
}

/// Held while updating records or the journal.
pub struct Lock(#[allow(dead_code)] Flock<File>);

impl State {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        State {
            dir: dir.into(),
            lock_wait: LOCK_WAIT,
        }
    }

    /// How long [`State::lock`] waits (default [`LOCK_WAIT`]).
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
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
            create_dir(&d, recursive)?;
            check_dir(&d)?;
        }
        Ok(())
    }

    /// Takes the state lock, waiting at most [`LOCK_WAIT`]: holders only do
    /// a few small writes, so a longer wait means someone holds it on
    /// purpose, and udev must not be blocked by that ([`StateBusy`]).
    pub fn lock(&self) -> Result<Lock> {
        self.lock_within(self.lock_wait)
    }

    /// Another lock file in the state dir (the counters have their own),
    /// taken the same way.
    pub fn lock_named(&self, name: &str) -> Result<Lock> {
        self.lock_file(name, self.lock_wait)
    }

    pub fn lock_within(&self, wait: Duration) -> Result<Lock> {
        self.lock_file("lock", wait)
    }

    fn lock_file(&self, name: &str, wait: Duration) -> Result<Lock> {
        let path = self.dir.join(name);
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

/// Creates a state directory (0700) unless it exists; another event
/// creating it at the same moment is fine.
pub(crate) fn create_dir(path: &Path, recursive: bool) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    match fs::DirBuilder::new()
        .recursive(recursive)
        .mode(DIR_MODE)
        .create(path)
    {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(e).with_context(|| format!("failed to create {}", path.display()))
        }
        _ => Ok(()),
    }
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
mod tests;
