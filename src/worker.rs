//! The out-of-udev worker: `hotplug-hook worker --job FILE`, started by the
//! `hotplug-hook-worker@.service` template unit, `systemd-run`, or a detached
//! fork. It runs the `command` backend's argv for one event, with the event
//! passed as environment variables, under a timeout, and journals the result.
//! This is where slow or networked confirmation (IMDS) belongs.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, geteuid};
use serde_json::{Value, json};

use crate::error::invalid;
use crate::state::{State, now_ms};

/// A job as written by `handle`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub iface: String,
    pub action: String,
    pub verdict: String,
    pub devpath: Option<String>,
    pub mac: Option<String>,
    pub driver: Option<String>,
    pub ifindex: Option<u64>,
    pub command: Vec<String>,
    pub timeout_secs: u64,
    /// The state dir of the `handle` that wrote the job.
    pub state_dir: Option<PathBuf>,
    pub journal_max_bytes: u64,
}

impl Job {
    pub fn parse(text: &str) -> Result<Job> {
        let v: Value = serde_json::from_str(text).map_err(|e| invalid(format!("bad job: {e}")))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let need = |k: &str| s(k).ok_or_else(|| invalid(format!("bad job: no {k:?}")));
        let command: Vec<String> = v
            .get("command")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if command.is_empty() {
            return Err(invalid("bad job: empty command"));
        }
        Ok(Job {
            id: need("id")?,
            iface: need("iface")?,
            action: need("action")?,
            verdict: need("verdict")?,
            devpath: s("devpath"),
            mac: s("mac"),
            driver: s("driver"),
            ifindex: v.get("ifindex").and_then(Value::as_u64),
            command,
            timeout_secs: v.get("timeout_secs").and_then(Value::as_u64).unwrap_or(120),
            state_dir: s("state_dir").map(PathBuf::from),
            journal_max_bytes: v
                .get("journal_max_bytes")
                .and_then(Value::as_u64)
                .unwrap_or(1 << 20),
        })
    }

    /// The environment the command sees: the event, and a fixed PATH.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            ("HOTPLUG_INTERFACE".into(), self.iface.clone()),
            ("HOTPLUG_ACTION".into(), self.action.clone()),
            ("HOTPLUG_VERDICT".into(), self.verdict.clone()),
        ];
        let opt = [
            ("HOTPLUG_MAC", self.mac.clone()),
            ("HOTPLUG_DEVPATH", self.devpath.clone()),
            ("HOTPLUG_DRIVER", self.driver.clone()),
            ("HOTPLUG_IFINDEX", self.ifindex.map(|i| i.to_string())),
        ];
        env.extend(
            opt.into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v))),
        );
        env
    }
}

/// Reads a job file, refusing one that someone else could have written.
pub fn read_job(path: &Path) -> Result<Job> {
    let meta = fs::symlink_metadata(path)
        .map_err(|e| invalid(format!("failed to read job {}: {e}", path.display())))?;
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
    let text = fs::read_to_string(path)
        .with_context(|| format!("failed to read job {}", path.display()))?;
    Job::parse(&text).with_context(|| format!("invalid job {}", path.display()))
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

/// Runs the job's argv directly (no shell), in its own process group so a
/// timeout kills everything it started.
pub fn run_command(job: &Job) -> Ran {
    let mut cmd = Command::new(&job.command[0]);
    cmd.args(&job.command[1..])
        .env_clear()
        .envs(job.env())
        .stdin(Stdio::null())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ran::FailedToStart(format!("{}: {e}", job.command[0])),
    };
    let deadline = Instant::now() + Duration::from_secs(job.timeout_secs);
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
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `hotplug-hook worker --job FILE`: run it, journal it (in the state dir of
/// the `handle` that wrote it), remove it. Returns whether the command
/// succeeded.
pub fn run(job_path: &Path) -> Result<bool> {
    let job = read_job(job_path)?;
    let start = Instant::now();
    let ran = run_command(&job);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let entry = json!({
        "ts_ms": now_ms(),
        "kind": "worker",
        "job": job.id,
        "iface": job.iface,
        "action": job.action,
        "verdict": job.verdict,
        "command": job.command,
        "result": ran.describe(),
        "ok": ran.ok(),
        "duration_ms": (ms * 1000.0).round() / 1000.0,
    });
    let msg = format!(
        "{} {}: {} worker ran {} → {} in {:.0} ms",
        job.iface,
        job.action,
        job.verdict,
        job.command[0],
        ran.describe(),
        ms
    );
    if ran.ok() {
        crate::log::info(&msg);
    } else {
        crate::log::warn(&msg);
    }
    if let Some(dir) = &job.state_dir {
        let state = State::new(dir);
        let journaled = state
            .ensure()
            .and_then(|()| state.lock())
            .and_then(|lock| state.append_journal(&lock, &entry, job.journal_max_bytes));
        if let Err(e) = journaled {
            crate::log::warn(&format!("{e:#}"));
        }
    }
    fs::remove_file(job_path)
        .with_context(|| format!("failed to remove job {}", job_path.display()))?;
    if let Ran::FailedToStart(e) = &ran {
        bail!("command {} failed to start: {e}", job.command[0]);
    }
    Ok(ran.ok())
}
