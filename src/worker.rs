//! The out-of-udev worker: `hotplug-hook worker --job FILE`, started by the
//! `hotplug-hook-worker@.service` template unit, `systemd-run`, or a detached
//! fork. It waits (bounded) for IMDS to agree with the verdict, then
//! reconfigures through the backend, and journals what happened. Slow and
//! networked work lives here, never in udev's RUN context.
//!
//! A running worker holds an exclusive flock on its job file for its whole
//! run, and unlinks the file (still holding the lock) when done. So a job
//! whose lock can be taken is *stranded*: its worker died (killed, OOM, unit
//! stopped) or never started. Each worker, once its own job is done, sweeps
//! `jobs/` and resumes stranded jobs one at a time; `scan` does the same
//! through detached workers. A stranded job past its deadline (its confirm
//! timeout plus [`STRANDED_MARGIN_MS`], on the boot clock) is not run but
//! reported: journal, metrics, `status`. A job is never run twice at once.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, geteuid};
use serde_json::{Value, json};

use crate::actions::{self, Confirm, Taken};
use crate::clock::{age_ms, boot_ms};
use crate::config::{Backend, Config};
use crate::decision::{Decision, Verdict};
use crate::error::{invalid, quote};
use crate::event::{Action, Event};
use crate::evidence::Evidence;
use crate::imds::{Attachment, Client, Presence};
use crate::state::{State, now_ms};

/// How long past its IMDS confirm timeout a job may still be started.
pub const STRANDED_MARGIN_MS: u64 = 30_000;

/// Job files are a few KiB; anything larger is not one of ours.
pub const MAX_JOB_BYTES: u64 = 64 * 1024;

/// The version of the job format this build reads and writes. Format 1 (no
/// `"format"` key) carried the whole configuration; a job of any other
/// version is not run (a package upgrade can leave old ones in /run).
pub const JOB_FORMAT: u64 = 2;

/// One unit of work, written by `handle`: the event, the verdict and the
/// facts the worker needs. Never an argv, a path or a timeout: the worker
/// takes those from root's configuration (the same config file, flags and
/// defaults as the hook), whatever else a job file says.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    /// Wall clock, for humans only.
    pub created_ms: u64,
    /// Boot clock ([`boot_ms`]): deadlines count from here. `None` for a
    /// job written by an older release: treated as past its deadline.
    pub created_boot_ms: Option<u64>,
    pub iface: String,
    pub action: Action,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub devpath: Option<String>,
    pub mac: Option<String>,
    pub driver: Option<String>,
    pub ifindex: Option<u32>,
    /// The backend kind `handle` chose (its parameters are the worker's).
    pub backend: Backend,
    pub confirm: Confirm,
}

impl Job {
    pub fn from_event(
        cfg: &Config,
        event: &Event,
        ev: &Evidence,
        d: &Decision,
        confirm: Confirm,
    ) -> Job {
        let created_ms = now_ms();
        Job {
            id: format!("{created_ms}-{}", std::process::id()),
            created_ms,
            created_boot_ms: Some(boot_ms()),
            iface: event.iface.clone(),
            action: event.action,
            verdict: d.verdict,
            reasons: d.reasons.clone(),
            devpath: ev.devpath.clone(),
            mac: ev.mac().map(str::to_string),
            driver: ev.driver.clone(),
            ifindex: ev
                .netdev
                .as_ref()
                .and_then(|n| n.ifindex)
                .or(ev.gone_ifindex()),
            backend: cfg.backend,
            confirm,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "format": JOB_FORMAT,
            "id": self.id,
            "created_ms": self.created_ms,
            "created_boot_ms": self.created_boot_ms,
            "iface": self.iface,
            "action": self.action.as_str(),
            "verdict": self.verdict.as_str(),
            "reasons": self.reasons,
            "devpath": self.devpath,
            "mac": self.mac,
            "driver": self.driver,
            "ifindex": self.ifindex,
            "backend": crate::actions::backend_name(self.backend),
            "confirm": self.confirm.as_str(),
        })
    }

    pub fn parse(text: &str) -> Result<Job> {
        let bad = |what: &str| invalid(format!("bad job: {what}"));
        let v: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        if !v.is_object() {
            return Err(bad("not a JSON object"));
        }
        match v.get("format").and_then(Value::as_u64) {
            Some(JOB_FORMAT) => {}
            Some(n) => {
                return Err(bad(&format!(
                    "unknown format {n} (this build reads {JOB_FORMAT})"
                )));
            }
            None => {
                return Err(bad(&format!(
                    "unknown format (no \"format\"; this build reads {JOB_FORMAT})"
                )));
            }
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let need = |k: &str| s(k).ok_or_else(|| bad(&format!("no {k:?}")));
        // What reaches the command's environment is checked as the hook
        // checks it: a job file is only as good as the state dir it is in.
        let iface = need("iface")?;
        crate::event::validate_iface(&iface)?;
        let devpath = s("devpath");
        if let Some(d) = &devpath {
            crate::event::validate_devpath(d)?;
        }
        let mac = s("mac");
        if let Some(m) = &mac
            && !crate::state::valid_mac(m)
        {
            return Err(bad(&format!("invalid mac {}", quote(m))));
        }
        let driver = s("driver");
        if let Some(d) = &driver {
            crate::event::validate_driver(d)?;
        }
        let backend = need("backend")?;
        let backend = <Backend as clap::ValueEnum>::from_str(&backend, false)
            .map_err(|_| bad(&format!("unknown backend {}", quote(&backend))))?;
        Ok(Job {
            id: need("id")?,
            created_ms: v.get("created_ms").and_then(Value::as_u64).unwrap_or(0),
            created_boot_ms: v.get("created_boot_ms").and_then(Value::as_u64),
            iface,
            action: Action::parse(&need("action")?)?.ok_or_else(|| bad("action"))?,
            verdict: Verdict::parse(&need("verdict")?).ok_or_else(|| bad("verdict"))?,
            reasons: v
                .get("reasons")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            devpath,
            mac,
            driver,
            ifindex: v
                .get("ifindex")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok()),
            backend,
            confirm: Confirm::parse(&need("confirm")?).ok_or_else(|| bad("confirm"))?,
        })
    }

    /// How long ago the job was created (boot clock); `None` when unknown
    /// or "in the future" (an earlier boot's, or forged): never fresh.
    pub fn age_ms(&self, now_boot_ms: u64) -> Option<u64> {
        self.created_boot_ms.and_then(|c| age_ms(c, now_boot_ms))
    }

    /// How long after its creation a job may still be started: the
    /// configured confirm timeout plus [`STRANDED_MARGIN_MS`].
    pub fn deadline_ms(cfg: &Config) -> u64 {
        cfg.imds_confirm_timeout_secs
            .saturating_mul(1000)
            .saturating_add(STRANDED_MARGIN_MS)
    }

    /// Too late to run: past [`Job::deadline_ms`], or of unknown age.
    pub fn past_deadline(&self, cfg: &Config, now_boot_ms: u64) -> bool {
        self.age_ms(now_boot_ms)
            .is_none_or(|age| age > Job::deadline_ms(cfg))
    }

    /// The record change for the verdict the worker reached.
    fn update(&self, verdict: Verdict, state: &State) -> crate::state::Update {
        let prior = self
            .mac
            .as_deref()
            .zip(self.devpath.as_deref())
            .and_then(|(mac, d)| {
                state
                    .records_for_mac(Some(mac), crate::event::device_of(d))
                    .into_iter()
                    .find(|r| r.has_mac(mac) && r.device() == crate::event::device_of(d))
            });
        crate::state::Update {
            action: self.action,
            verdict,
            iface: self.iface.clone(),
            old_iface: None,
            devpath: self.devpath.clone(),
            ifindex: self.ifindex,
            present: None,
            prior,
            driver: self.driver.clone(),
            module: None,
        }
    }

    /// The environment the command sees: the event, what IMDS said, a fixed PATH.
    pub fn env(&self, verdict: Verdict, imds: Option<&Attachment>) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            ("HOTPLUG_INTERFACE".into(), self.iface.clone()),
            ("HOTPLUG_ACTION".into(), self.action.as_str().into()),
            ("HOTPLUG_VERDICT".into(), verdict.as_str().into()),
        ];
        let opt = [
            ("HOTPLUG_MAC", self.mac.clone()),
            ("HOTPLUG_DEVPATH", self.devpath.clone()),
            ("HOTPLUG_DRIVER", self.driver.clone()),
            ("HOTPLUG_IFINDEX", self.ifindex.map(|i| i.to_string())),
            (
                "HOTPLUG_DEVICE_NUMBER",
                imds.map(|a| a.device_number.clone()),
            ),
            (
                "HOTPLUG_NETWORK_CARD_INDEX",
                imds.and_then(|a| a.network_card_index.clone()),
            ),
            (
                "HOTPLUG_INTERFACE_ID",
                imds.and_then(|a| a.interface_id.clone()),
            ),
        ];
        env.extend(
            opt.into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v))),
        );
        env
    }
}

/// A job file we hold the lock of: nobody else runs it while we live.
pub struct JobFile {
    path: PathBuf,
    lock: Flock<File>,
}

/// What trying to take a job's lock found.
pub enum Claim {
    /// The lock is ours: the job is not running anywhere else.
    Ours(JobFile),
    /// Another process holds it: a running worker.
    Held,
    /// The file is gone, or was unlinked (done) before we locked it.
    Gone,
}

/// Opens a job file without following a symlink or blocking on a FIFO, and
/// refuses one that someone else could have written. `None`: no such file.
fn open_job(path: &Path) -> Result<Option<File>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(invalid(format!(
                "job {} is not a regular file (a symlink)",
                path.display()
            )));
        }
        Err(e) => {
            return Err(invalid(format!(
                "failed to open job {}: {e}",
                path.display()
            )));
        }
    };
    let meta = file
        .metadata()
        .with_context(|| format!("failed to stat job {}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(invalid(format!(
            "job {} is not a regular file",
            path.display()
        )));
    }
    if meta.uid() != geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(invalid(format!(
            "refusing job {}: not owned by us or writable by others",
            path.display()
        )));
    }
    Ok(Some(file))
}

/// Reads and parses a job from an open file (at most [`MAX_JOB_BYTES`]).
fn read_open_job(mut file: &File, path: &Path) -> Result<Job> {
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_JOB_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("failed to read job {}", path.display()))?;
    if bytes.len() as u64 > MAX_JOB_BYTES {
        return Err(invalid(format!(
            "invalid job {}: larger than {MAX_JOB_BYTES} bytes",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| invalid(format!("invalid job {}: not UTF-8", path.display())))?;
    Job::parse(&text).with_context(|| format!("invalid job {}", path.display()))
}

fn linked(file: &File) -> bool {
    file.metadata().is_ok_and(|m| m.nlink() > 0)
}

/// Tries (without waiting) to take a job's lock: see [`Claim`].
pub fn claim(path: &Path) -> Result<Claim> {
    let Some(file) = open_job(path)? else {
        return Ok(Claim::Gone);
    };
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(Claim::Held),
        Err((_, e)) => {
            return Err(anyhow::anyhow!(
                "failed to lock job {}: {e}",
                path.display()
            ));
        }
    };
    // A worker that finished unlinked the file while holding the lock; we
    // may have opened it just before that.
    if !linked(&lock) {
        return Ok(Claim::Gone);
    }
    Ok(Claim::Ours(JobFile {
        path: path.to_path_buf(),
        lock,
    }))
}

/// [`claim`] for a worker's own job: a lock held only for a moment (a
/// `status` or `scan` looking at it) is waited out, briefly.
fn claim_own(path: &Path) -> Result<Claim> {
    for _ in 0..40 {
        match claim(path)? {
            Claim::Held => std::thread::sleep(Duration::from_millis(5)),
            other => return Ok(other),
        }
    }
    Ok(Claim::Held)
}

impl JobFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The job's file name without `.json`: its id.
    pub fn name(&self) -> String {
        job_name(&self.path)
    }

    /// Reads and parses the job (at most [`MAX_JOB_BYTES`]).
    pub fn read(&self) -> Result<Job> {
        read_open_job(&self.lock, &self.path)
    }

    /// Still in the jobs dir? Unlinked means done by someone else, or
    /// cancelled by hand (`rm`).
    pub fn linked(&self) -> bool {
        linked(&self.lock)
    }

    /// Removes the job file, still holding the lock, then releases it. The
    /// path is removed only if it is still this file.
    pub fn finish(self) -> Result<()> {
        let ours = self.lock.metadata().ok();
        let there = fs::symlink_metadata(&self.path).ok();
        let same = match (ours, there) {
            (Some(a), Some(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same {
            fs::remove_file(&self.path)
                .with_context(|| format!("failed to remove job {}", self.path.display()))?;
        }
        Ok(())
    }
}

fn job_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".json").unwrap_or(&name).to_string()
}

/// A job waiting in `jobs/`, as `status` sees it.
#[derive(Debug)]
pub struct Pending {
    pub id: String,
    /// `Some(true)`: a running worker holds it; `Some(false)`: stranded;
    /// `None`: could not tell (unreadable, e.g. not ours).
    pub held: Option<bool>,
    pub job: Option<Job>,
    pub error: Option<String>,
}

impl Pending {
    pub fn to_json(&self, cfg: &Config, now_boot_ms: u64) -> Value {
        let j = self.job.as_ref();
        json!({
            "id": self.id,
            "state": match self.held {
                Some(true) => "running",
                Some(false) => "stranded",
                None => "unknown",
            },
            "iface": j.map(|j| j.iface.clone()),
            "action": j.map(|j| j.action.as_str()),
            "verdict": j.map(|j| j.verdict.as_str()),
            "age_ms": j.and_then(|j| j.age_ms(now_boot_ms)),
            "deadline_ms": j.map(|_| Job::deadline_ms(cfg)),
            "past_deadline": j.map(|j| j.past_deadline(cfg, now_boot_ms)),
            "error": self.error,
        })
    }
}

/// The job files in `dir`, oldest id first (temp files skipped).
fn job_paths(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

/// Every job in the state dir's `jobs/`, and whether a worker holds it.
/// Looking takes a stranded job's lock for a moment only; a worker starting
/// at that moment waits it out ([`claim_own`]).
pub fn pending(state: &State) -> Vec<Pending> {
    let mut out = Vec::new();
    for path in job_paths(&state.jobs_dir()) {
        let id = job_name(&path);
        let file = match open_job(&path) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                out.push(Pending {
                    id,
                    held: None,
                    job: None,
                    error: Some(format!("{e:#}")),
                });
                continue;
            }
        };
        let (file, held) = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) if !linked(&lock) => continue,
            Ok(lock) => match lock.unlock() {
                Ok(f) => (f, Some(false)),
                Err((_, e)) => {
                    out.push(Pending {
                        id,
                        held: None,
                        job: None,
                        error: Some(format!("failed to unlock: {e}")),
                    });
                    continue;
                }
            },
            Err((f, Errno::EWOULDBLOCK)) => (f, Some(true)),
            Err((f, _)) => (f, None),
        };
        let (job, error) = match read_open_job(&file, &path) {
            Ok(j) => (Some(j), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        out.push(Pending {
            id,
            held,
            job,
            error,
        });
    }
    out
}

/// How the command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ran {
    Exited(ExitStatus),
    TimedOut,
    FailedToStart(String),
}

impl Ran {
    pub fn ok(&self) -> bool {
        matches!(self, Ran::Exited(s) if s.success())
    }

    pub fn describe(&self) -> String {
        match self {
            Ran::Exited(s) => s.to_string(),
            Ran::TimedOut => "killed after the timeout".into(),
            Ran::FailedToStart(e) => format!("failed to start: {e}"),
        }
    }
}

/// Runs the argv directly (no shell) with the event in its environment, in
/// its own process group so a timeout kills everything it started.
pub fn run_command(
    job: &Job,
    argv: &[String],
    timeout_secs: u64,
    imds: Option<&Attachment>,
) -> Ran {
    let Some((program, args)) = argv.split_first() else {
        return Ran::FailedToStart("no command configured".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(job.env(job.verdict, imds))
        .stdin(Stdio::null())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ran::FailedToStart(format!("{program}: {e}")),
    };
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    // Poll quickly at first (most commands are short), then back off.
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ran::Exited(status),
            Ok(None) => {}
            Err(e) => return Ran::FailedToStart(e.to_string()),
        }
        if Instant::now() >= deadline {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            return Ran::TimedOut;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The outcome of waiting for IMDS.
#[derive(Clone, Debug, PartialEq)]
pub enum Confirmed {
    /// Reconfigure, with this verdict (a tie-break can turn an unbind into a
    /// removal) and what IMDS said about the attachment.
    Go(Verdict, Option<Attachment>, String),
    /// No reconfiguration needed (a tie-break that found the MAC attached).
    NoAction(String),
    /// IMDS did not agree within the confirm timeout.
    GaveUp(String),
    /// The job file was removed while we waited (by hand): not run.
    Cancelled(String),
}

/// What the IMDS wait cost.
#[derive(Clone, Debug, Default)]
pub struct ImdsSpent {
    pub attempts: u32,
    pub requests: usize,
    pub cached: usize,
}

/// Asks IMDS until it agrees with the job's verdict, with backoff (1 s,
/// doubling, at most 15 s) until `imds_confirm_timeout_secs` after the job
/// was created (boot clock). IMDS lags both ways, so "not yet" is retried,
/// and so is an IMDS that cannot be reached. `wanted` is asked before each
/// pause: false (the job file was removed) stops at once.
pub fn confirm(
    cfg: &Config,
    state: &State,
    job: &Job,
    wanted: &dyn Fn() -> bool,
) -> (Confirmed, ImdsSpent) {
    let mut spent = ImdsSpent::default();
    let Some(mac) = job.mac.clone() else {
        return (
            Confirmed::Go(
                job.verdict,
                None,
                "no MAC known: not confirmed in IMDS".into(),
            ),
            spent,
        );
    };
    if job.confirm == Confirm::None {
        return (Confirmed::Go(job.verdict, None, String::new()), spent);
    }
    // IMDS is off in root's configuration (whatever the job asked).
    if !cfg.imds {
        return (
            match job.confirm {
                Confirm::Tiebreak => Confirmed::NoAction(
                    "IMDS is off (--imds=false): no tie-break, a sysfs unbind".into(),
                ),
                _ => Confirmed::Go(
                    job.verdict,
                    None,
                    "IMDS is off (--imds=false): not confirmed".into(),
                ),
            },
            spent,
        );
    }
    let give_up_ms = cfg.imds_confirm_timeout_secs.saturating_mul(1000);
    let mut pause = Duration::from_secs(1);
    loop {
        let mut client = Client::new(cfg.imds_settings(), Some(state.clone()));
        let presence = match job.confirm {
            Confirm::Attach => client.attached(&mac),
            _ => client.detached(&mac),
        };
        client.flush_metrics(cfg.metrics_file.as_deref());
        spent.attempts += 1;
        spent.requests += client.log.iter().filter(|r| !r.cached).count();
        spent.cached += client.log.iter().filter(|r| r.cached).count();
        let waiting = match (job.confirm, presence) {
            (Confirm::Detach | Confirm::Tiebreak, Presence::Detached(why)) => {
                return (
                    Confirmed::Go(Verdict::DeviceRemoved, None, format!("IMDS agrees: {why}")),
                    spent,
                );
            }
            (Confirm::Attach, Presence::Attached(a)) => {
                let note = format!("IMDS confirms it: device-number {}", a.device_number);
                return (Confirmed::Go(Verdict::NewDevice, Some(a), note), spent);
            }
            (Confirm::Tiebreak, Presence::Attached(a)) => {
                return (
                    Confirmed::NoAction(format!(
                        "IMDS still has {mac} attached (device-number {}): a sysfs unbind",
                        a.device_number
                    )),
                    spent,
                );
            }
            (_, Presence::Detached(why)) => format!("not in IMDS yet: {why}"),
            (_, Presence::Attached(a)) => {
                format!("IMDS still lists {mac} (device-number {})", a.device_number)
            }
            (_, Presence::Unknown(e)) => format!("IMDS could not tell: {e}"),
        };
        // Of unknown age (created "in the future"): past any deadline.
        let age = job.age_ms(boot_ms());
        if age.is_none_or(|a| a.saturating_add(pause.as_millis() as u64) > give_up_ms) {
            return (
                Confirmed::GaveUp(format!(
                    "gave up after {} attempts over {}: {waiting}",
                    spent.attempts,
                    age.map_or("an unknown time".into(), |a| format!(
                        "{:.1} s",
                        a as f64 / 1000.0
                    )),
                )),
                spent,
            );
        }
        if !wanted() {
            return (
                Confirmed::Cancelled(format!("job removed while waiting for IMDS: {waiting}")),
                spent,
            );
        }
        crate::log::debug(&format!(
            "{}: {waiting}; asking again in {pause:?}",
            job.iface
        ));
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(15));
    }
}

/// `hotplug-hook worker --job FILE`: take the job's lock, confirm,
/// reconfigure, remove the job, journal (in the state dir of the `handle`
/// that wrote the job); then resume the state dir's stranded jobs, one at a
/// time. Returns whether everything its own job needed succeeded. A job
/// another worker holds, or already finished, is left alone (exit 0).
pub fn run(cfg: &Config, job_path: &Path) -> Result<bool> {
    let state = State::new(&cfg.state_dir);
    state.ensure()?;
    in_jobs_dir(&state, job_path)?;
    let file = match claim_own(job_path)? {
        Claim::Ours(f) => f,
        Claim::Held => {
            crate::log::info(&format!(
                "job {} is being run by another worker: not running it twice",
                job_path.display()
            ));
            return Ok(true);
        }
        Claim::Gone => {
            crate::log::info(&format!(
                "job {} is gone: already done by another worker (or removed)",
                job_path.display()
            ));
            return Ok(true);
        }
    };
    let job = file.read()?;
    let ok = process(cfg, file, &job, Found::Own)?;
    sweep(cfg, Sweep::Resume);
    Ok(ok)
}

/// A worker runs only jobs in its own state dir's `jobs/` (the state dir of
/// its configuration, which `handle` passed on with `--config` and its
/// flags): the journal, records and locks it uses are that state dir's.
fn in_jobs_dir(state: &State, job: &Path) -> Result<()> {
    let abs = std::path::absolute(job).unwrap_or_else(|_| job.to_path_buf());
    let parent = abs.parent().unwrap_or(Path::new("/"));
    let jobs = state.jobs_dir();
    let same = parent == jobs
        || matches!(
            (fs::canonicalize(parent), fs::canonicalize(&jobs)),
            (Ok(a), Ok(b)) if a == b
        );
    if !same {
        return Err(invalid(format!(
            "job {} is not in {}: a worker runs only its own state dir's jobs \
             (pass it --config and --state-dir as the hook had them)",
            job.display(),
            jobs.display()
        )));
    }
    Ok(())
}

/// How a job came to be processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    /// The job this worker was started for.
    Own,
    /// Stranded, found by a worker's sweep.
    Worker,
    /// Stranded, found by `scan`.
    Scan,
}

impl Found {
    fn as_str(self) -> &'static str {
        match self {
            Found::Own => "own",
            Found::Worker => "worker",
            Found::Scan => "scan",
        }
    }
}

/// What a sweep of `jobs/` does with a stranded job within its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// Run it here, now, one after the other (a worker, after its own job).
    Resume,
    /// Start a detached worker for it as `handle` does (`scan`, which must
    /// stay quick and may have no network).
    Dispatch,
}

/// What a sweep found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Held by a running worker: left alone.
    pub running: usize,
    /// Stranded and run here, or handed to a new worker.
    pub resumed: usize,
    /// Stranded past their deadline (or unreadable): reported and removed.
    pub stranded: usize,
    /// Could not be looked at (not ours, unreadable): left alone.
    pub skipped: usize,
}

/// Looks at every job in `cfg`'s state dir's `jobs/`: held ones are left
/// to their worker; stranded ones are resumed (see [`Sweep`]) or, past their
/// deadline, reported and removed without being run. Each job runs with its
/// own settings; `cfg` dispatches and reports unreadable ones.
pub fn sweep(cfg: &Config, how: Sweep) -> Swept {
    let state = &State::new(&cfg.state_dir);
    let mut swept = Swept::default();
    for path in job_paths(&state.jobs_dir()) {
        let file = match claim(&path) {
            Ok(Claim::Ours(f)) => f,
            Ok(Claim::Held) => {
                swept.running += 1;
                continue;
            }
            Ok(Claim::Gone) => continue,
            Err(e) => {
                crate::log::warn(&format!("skipping job: {e:#}"));
                swept.skipped += 1;
                continue;
            }
        };
        let found = match how {
            Sweep::Resume => Found::Worker,
            Sweep::Dispatch => Found::Scan,
        };
        let job = match file.read() {
            Ok(j) => j,
            Err(e) => {
                swept.stranded += 1;
                unreadable(cfg, state, file, &e, found);
                continue;
            }
        };
        if job.past_deadline(cfg, boot_ms()) {
            swept.stranded += 1;
            if let Err(e) = process(cfg, file, &job, found) {
                crate::log::warn(&format!("{e:#}"));
            }
            continue;
        }
        swept.resumed += 1;
        match how {
            Sweep::Resume => {
                if let Err(e) = process(cfg, file, &job, found) {
                    crate::log::warn(&format!("{e:#}"));
                }
            }
            Sweep::Dispatch => {
                // The new worker takes the lock; should another take it
                // first, that one runs the job and ours exits.
                let path = file.path().to_path_buf();
                drop(file);
                match actions::start_worker(cfg, &path, &job.id) {
                    Ok(how) => {
                        crate::log::info(&format!(
                            "{}: resuming stranded job {}: {how}",
                            job.iface, job.id
                        ));
                        let counted =
                            crate::metrics::update(state, cfg.metrics_file.as_deref(), |m| {
                                m.resumed_jobs += 1
                            });
                        if let Err(e) = counted {
                            crate::log::warn(&format!("{e:#}"));
                        }
                    }
                    Err(e) => crate::log::warn(&format!(
                        "{}: failed to resume stranded job {}: {e:#}",
                        job.iface, job.id
                    )),
                }
            }
        }
    }
    swept
}

/// One locked job: run it, or report it stranded if past its deadline.
/// Returns whether everything it needed succeeded.
fn process(cfg: &Config, file: JobFile, job: &Job, found: Found) -> Result<bool> {
    let state = State::new(&cfg.state_dir);
    if job.past_deadline(cfg, boot_ms()) {
        report_stranded(cfg, &state, file, job, found)?;
        return Ok(false);
    }
    let resumed = found != Found::Own;
    let start = Instant::now();
    let (mut confirmed, spent) = confirm(cfg, &state, job, &|| file.linked());
    if matches!(confirmed, Confirmed::Go(..)) && !file.linked() {
        confirmed = Confirmed::Cancelled("job removed before it ran".into());
    }
    let (verdict, taken, note): (Verdict, Option<Taken>, String) = match &confirmed {
        Confirmed::Go(v, attachment, note) => (
            *v,
            Some(actions::trigger(
                cfg,
                &Job {
                    verdict: *v,
                    ..job.clone()
                },
                attachment.as_ref(),
            )),
            note.clone(),
        ),
        Confirmed::NoAction(note) | Confirmed::GaveUp(note) | Confirmed::Cancelled(note) => {
            (job.verdict, None, note.clone())
        }
    };
    let ok = !matches!(confirmed, Confirmed::GaveUp(_))
        && taken.as_ref().is_none_or(|t| t.result != "failed");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let cancelled = matches!(confirmed, Confirmed::Cancelled(_));
    let entry = json!({
        "ts_ms": now_ms(),
        "boot_ms": boot_ms(),
        "kind": "worker",
        "result": if cancelled { "cancelled" } else { "completed" },
        "resumed": resumed,
        "job": job.id,
        "iface": job.iface,
        "action": job.action.as_str(),
        "verdict": verdict.as_str(),
        "event_verdict": job.verdict.as_str(),
        "confirm": job.confirm.as_str(),
        "imds": {
            "result": match &confirmed {
                Confirmed::Go(..) => "agreed",
                Confirmed::NoAction(_) => "no-action",
                Confirmed::GaveUp(_) => "gave-up",
                Confirmed::Cancelled(_) => "cancelled",
            },
            "note": note,
            "attempts": spent.attempts,
            "requests": spent.requests,
            "cached": spent.cached,
        },
        "action_taken": taken.as_ref().map_or(Value::Null, Taken::to_json),
        "ok": ok,
        "duration_ms": (ms * 1000.0).round() / 1000.0,
    });
    let msg = format!(
        "{} {}: {}{}{}{} in {ms:.0} ms",
        job.iface,
        job.action.as_str(),
        if resumed {
            format!("resumed stranded job {}: ", job.id)
        } else {
            String::new()
        },
        verdict.as_str(),
        if note.is_empty() {
            String::new()
        } else {
            format!(" ({note})")
        },
        taken
            .as_ref()
            .map(|t| format!("; {} {}: {}", t.backend, t.result, t.detail))
            .unwrap_or_default(),
    );
    let duration = format!("{ms:.3}");
    crate::log::event(
        if ok {
            crate::log::Priority::Info
        } else {
            crate::log::Priority::Warning
        },
        &msg,
        &[
            ("INTERFACE", &job.iface),
            ("ACTION", job.action.as_str()),
            ("VERDICT", verdict.as_str()),
            ("MAC", job.mac.as_deref().unwrap_or("")),
            ("JOB", &job.id),
            ("DURATION_MS", &duration),
        ],
    );
    // The job is done: gone before the journal says so. (A cancelled job's
    // file is already gone.)
    let removed = file.finish();
    let imds_result = entry["imds"]["result"].as_str().unwrap_or("").to_string();
    let journaled = state.ensure().and_then(|()| state.lock()).and_then(|lock| {
        // A verdict the worker made (IMDS turned an unbind into a removal)
        // reaches the records the same way the hook's do.
        if verdict != job.verdict {
            state.apply(&lock, &job.update(verdict, &state))?;
        }
        state.append_journal(&lock, &entry, cfg.journal_max_bytes)?;
        crate::metrics::update_locked(&state, &lock, cfg.metrics_file.as_deref(), |m| {
            if job.confirm != Confirm::None {
                m.worker_run(&imds_result);
            }
            if let Some(t) = &taken {
                m.reconfiguration(t.backend, t.result);
            }
            if resumed {
                m.resumed_jobs += 1;
            }
        })
    });
    if let Err(e) = journaled {
        crate::log::warn(&format!("{e:#}"));
    }
    removed?;
    Ok(ok)
}

/// A job past its deadline: not run; removed, logged, journaled, counted.
fn report_stranded(
    cfg: &Config,
    state: &State,
    file: JobFile,
    job: &Job,
    found: Found,
) -> Result<()> {
    let age = job.age_ms(boot_ms());
    let note = format!(
        "{}; deadline {:.0} s (confirm timeout + {:.0} s): not run",
        match age {
            Some(a) => format!("created {:.1} s ago", a as f64 / 1000.0),
            None => "created at an unknown time (in the future, or by an older release)".into(),
        },
        Job::deadline_ms(cfg) as f64 / 1000.0,
        STRANDED_MARGIN_MS as f64 / 1000.0,
    );
    crate::log::event(
        crate::log::Priority::Warning,
        &format!(
            "{} {}: job {} stranded ({}): {note}",
            job.iface,
            job.action.as_str(),
            job.id,
            if found == Found::Own {
                "its worker started too late"
            } else {
                "its worker died or never started"
            }
        ),
        &[
            ("INTERFACE", &job.iface),
            ("ACTION", job.action.as_str()),
            ("VERDICT", job.verdict.as_str()),
            ("MAC", job.mac.as_deref().unwrap_or("")),
            ("JOB", &job.id),
        ],
    );
    let entry = json!({
        "ts_ms": now_ms(),
        "boot_ms": boot_ms(),
        "kind": "worker",
        "result": "stranded",
        "found_by": found.as_str(),
        "job": job.id,
        "iface": job.iface,
        "action": job.action.as_str(),
        "verdict": job.verdict.as_str(),
        "event_verdict": job.verdict.as_str(),
        "confirm": job.confirm.as_str(),
        "mac": job.mac,
        "age_ms": age,
        "deadline_ms": Job::deadline_ms(cfg),
        "note": note,
        "action_taken": Value::Null,
        "ok": false,
    });
    let removed = file.finish();
    journal_stranded(
        state,
        &entry,
        cfg.journal_max_bytes,
        cfg.metrics_file.as_deref(),
    );
    removed
}

/// A stranded job file that cannot be parsed: nothing to run, so removed,
/// logged, journaled and counted like one past its deadline.
fn unreadable(cfg: &Config, state: &State, file: JobFile, err: &anyhow::Error, found: Found) {
    let id = file.name();
    crate::log::warn(&format!("removing stranded job {id}: {err:#}"));
    let entry = json!({
        "ts_ms": now_ms(),
        "boot_ms": boot_ms(),
        "kind": "worker",
        "result": "stranded",
        "found_by": found.as_str(),
        "job": id,
        "iface": Value::Null,
        "note": format!("unreadable: {err:#}"),
        "action_taken": Value::Null,
        "ok": false,
    });
    if let Err(e) = file.finish() {
        crate::log::warn(&format!("{e:#}"));
    }
    journal_stranded(
        state,
        &entry,
        cfg.journal_max_bytes,
        cfg.metrics_file.as_deref(),
    );
}

fn journal_stranded(state: &State, entry: &Value, max_bytes: u64, prom: Option<&Path>) {
    let journaled = state.ensure().and_then(|()| state.lock()).and_then(|lock| {
        state.append_journal(&lock, entry, max_bytes)?;
        crate::metrics::update_locked(state, &lock, prom, |m| m.stranded_jobs += 1)
    });
    if let Err(e) = journaled {
        crate::log::warn(&format!("{e:#}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn job_json(_dir: &Path, stamp: Option<u64>) -> String {
        let mut v = json!({
            "format": JOB_FORMAT,
            "id": "1-2", "created_ms": 5, "iface": "ens7", "action": "add",
            "verdict": "new-device", "backend": "command", "confirm": "none",
        });
        if let Some(s) = stamp {
            v["created_boot_ms"] = json!(s);
        }
        v.to_string()
    }

    fn write_job(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("1-2.json");
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    #[test]
    fn deadlines_count_on_the_boot_clock() {
        let dir = tempfile::tempdir().unwrap();
        let job = Job::parse(&job_json(dir.path(), Some(1_000))).unwrap();
        let cfg = crate::config::Settings {
            imds_confirm_timeout_secs: Some(10),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(Job::deadline_ms(&cfg), 10_000 + STRANDED_MARGIN_MS);
        assert_eq!(job.age_ms(1_500), Some(500));
        assert!(!job.past_deadline(&cfg, 1_000 + 40_000));
        assert!(job.past_deadline(&cfg, 1_000 + 40_001));
        // Created "in the future": no age, past any deadline.
        assert_eq!(job.age_ms(999), None);
        assert!(job.past_deadline(&cfg, 999));
        // No boot stamp: past its deadline.
        let old = Job::parse(&job_json(dir.path(), None)).unwrap();
        assert_eq!(old.created_boot_ms, None);
        assert!(old.past_deadline(&cfg, 1_000));
        // The stamp survives a round trip.
        let back = Job::parse(&job.to_json().to_string()).unwrap();
        assert_eq!(back.created_boot_ms, Some(1_000));
        assert_eq!(back.created_ms, 5);
    }

    #[test]
    fn claims_are_exclusive_and_see_unlinked_jobs_as_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_job(dir.path(), &job_json(dir.path(), Some(1)));
        let Claim::Ours(first) = claim(&path).unwrap() else {
            panic!("a free job is ours");
        };
        assert_eq!(first.read().unwrap().iface, "ens7");
        assert_eq!(first.name(), "1-2");
        // A second open file description cannot take it while we hold it.
        assert!(matches!(claim(&path).unwrap(), Claim::Held));
        drop(first);
        assert!(matches!(claim(&path).unwrap(), Claim::Ours(_)));
        // Opened, then unlinked by a finishing worker, then locked: gone.
        let file = open_job(&path).unwrap().unwrap();
        fs::remove_file(&path).unwrap();
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        assert!(!linked(&lock));
        assert!(matches!(claim(&path).unwrap(), Claim::Gone));
    }

    #[test]
    fn finish_removes_only_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_job(dir.path(), &job_json(dir.path(), Some(1)));
        let Claim::Ours(f) = claim(&path).unwrap() else {
            panic!()
        };
        // Replaced under the same name meanwhile: not ours to remove.
        fs::remove_file(&path).unwrap();
        write_job(dir.path(), "{}");
        f.finish().unwrap();
        assert!(path.exists());
        let Claim::Ours(f) = claim(&path).unwrap() else {
            panic!()
        };
        f.finish().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn jobs_carry_no_settings_and_a_format() {
        let dir = tempfile::tempdir().unwrap();
        let job = Job::parse(&job_json(dir.path(), Some(1))).unwrap();
        let v = job.to_json();
        assert_eq!(v["format"], JOB_FORMAT);
        assert_eq!(v["backend"], "command");
        for key in ["config", "command", "command_timeout_secs", "state_dir"] {
            assert!(v.get(key).is_none(), "{key} in {v}");
        }
        // Another format (or none: format 1 carried the config) is refused.
        for format in [json!(1), json!(3), json!("2"), Value::Null] {
            let mut old = v.clone();
            old["format"] = format.clone();
            let err = Job::parse(&old.to_string()).unwrap_err();
            assert!(
                format!("{err:#}").contains("unknown format"),
                "{format}: {err:#}"
            );
        }
        // Keys it does not know are never read.
        let mut planted = v.clone();
        planted["command"] = json!(["/bin/sh", "-c", "touch /tmp/pwned"]);
        planted["config"] = json!({"command": ["/bin/sh"]});
        let back = Job::parse(&planted.to_string()).unwrap();
        assert_eq!(back.to_json(), v);
        // Values that would reach the command's environment are checked.
        for (k, bad) in [
            ("mac", json!("x".repeat(100))),
            ("driver", json!("..")),
            ("iface", json!("../x")),
            ("devpath", json!("/etc/passwd")),
            ("backend", json!("shell")),
        ] {
            let mut j = v.clone();
            j[k] = bad;
            assert!(Job::parse(&j.to_string()).is_err(), "{k}");
        }
    }

    #[test]
    fn hostile_job_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_job(dir.path(), &job_json(dir.path(), Some(1)));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o602)).unwrap();
        assert!(claim(&path).is_err());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(claim(&link).is_err());
        let fifo = dir.path().join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(claim(&fifo).is_err(), "a FIFO is refused without blocking");
        let big = write_job(dir.path(), &" ".repeat(MAX_JOB_BYTES as usize + 1));
        let Claim::Ours(f) = claim(&big).unwrap() else {
            panic!()
        };
        assert!(f.read().is_err());
    }
}
