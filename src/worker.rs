//! The out-of-udev worker: `hotplug-hook worker --job FILE`, started by the
//! `hotplug-hook-worker@.service` template unit, `systemd-run`, or a detached
//! fork. It waits (bounded) for IMDS to agree with the verdict, then
//! reconfigures through the backend, and journals what happened. Slow and
//! networked work lives here, never in udev's RUN context.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, geteuid};
use serde_json::{Value, json};

use crate::actions::{self, Confirm, Taken};
use crate::config::{Config, Settings};
use crate::decision::{Decision, Verdict};
use crate::error::invalid;
use crate::event::{Action, Event};
use crate::evidence::Evidence;
use crate::imds::{Attachment, Client, Presence};
use crate::state::{State, now_ms};

/// One unit of work, written by `handle`. It carries the settings `handle`
/// ran with, so the worker does not depend on how it was started.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    pub created_ms: u64,
    pub iface: String,
    pub action: Action,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub devpath: Option<String>,
    pub mac: Option<String>,
    pub driver: Option<String>,
    pub ifindex: Option<u32>,
    pub confirm: Confirm,
    pub config: Config,
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
            confirm,
            config: cfg.clone(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "created_ms": self.created_ms,
            "iface": self.iface,
            "action": self.action.as_str(),
            "verdict": self.verdict.as_str(),
            "reasons": self.reasons,
            "devpath": self.devpath,
            "mac": self.mac,
            "driver": self.driver,
            "ifindex": self.ifindex,
            "confirm": self.confirm.as_str(),
            "config": self.config.to_json(),
        })
    }

    pub fn parse(text: &str) -> Result<Job> {
        let bad = |what: &str| invalid(format!("bad job: {what}"));
        let v: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let need = |k: &str| s(k).ok_or_else(|| bad(&format!("no {k:?}")));
        let config = v.get("config").ok_or_else(|| bad("no \"config\""))?;
        let config = Settings::from_json(&config.to_string())
            .and_then(Settings::resolve)
            .context("bad job config")?;
        Ok(Job {
            id: need("id")?,
            created_ms: v
                .get("created_ms")
                .and_then(Value::as_u64)
                .unwrap_or_else(now_ms),
            iface: need("iface")?,
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
            devpath: s("devpath"),
            mac: s("mac"),
            driver: s("driver"),
            ifindex: v
                .get("ifindex")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok()),
            confirm: Confirm::parse(&need("confirm")?).ok_or_else(|| bad("confirm"))?,
            config,
        })
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
/// was created. IMDS lags both ways, so "not yet" is retried, and so is an
/// IMDS that cannot be reached.
pub fn confirm(cfg: &Config, state: &State, job: &Job) -> (Confirmed, ImdsSpent) {
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
    let give_up_ms = job.created_ms + cfg.imds_confirm_timeout_secs * 1000;
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
        let now = now_ms();
        if now + pause.as_millis() as u64 > give_up_ms {
            return (
                Confirmed::GaveUp(format!(
                    "gave up after {} attempts over {:.1} s: {waiting}",
                    spent.attempts,
                    now.saturating_sub(job.created_ms) as f64 / 1000.0
                )),
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

/// `hotplug-hook worker --job FILE`: confirm, reconfigure, remove the job,
/// journal (in the state dir of the `handle` that wrote the job). Returns
/// whether everything it had to do succeeded.
pub fn run(job_path: &Path) -> Result<bool> {
    let job = read_job(job_path)?;
    let cfg = &job.config;
    crate::log::init(cfg.log, &cfg.journal_socket, &cfg.syslog_socket);
    let state = State::new(&cfg.state_dir);
    let start = Instant::now();
    let (confirmed, spent) = confirm(cfg, &state, &job);
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
        Confirmed::NoAction(note) => (job.verdict, None, note.clone()),
        Confirmed::GaveUp(note) => (job.verdict, None, note.clone()),
    };
    let ok = !matches!(confirmed, Confirmed::GaveUp(_))
        && taken.as_ref().is_none_or(|t| t.result != "failed");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let entry = json!({
        "ts_ms": now_ms(),
        "kind": "worker",
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
        "{} {}: {}{}{} in {ms:.0} ms",
        job.iface,
        job.action.as_str(),
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
    // The job is done: gone before the journal says so.
    let removed = fs::remove_file(job_path)
        .with_context(|| format!("failed to remove job {}", job_path.display()));
    let imds_result = entry["imds"]["result"].as_str().unwrap_or("").to_string();
    let journaled = state.ensure().and_then(|()| state.lock()).and_then(|lock| {
        state.append_journal(&lock, &entry, cfg.journal_max_bytes)?;
        crate::metrics::update_locked(&state, &lock, cfg.metrics_file.as_deref(), |m| {
            if job.confirm != Confirm::None {
                m.worker_run(&imds_result);
            }
            if let Some(t) = &taken {
                m.reconfiguration(t.backend, t.result);
            }
        })
    });
    if let Err(e) = journaled {
        crate::log::warn(&format!("{e:#}"));
    }
    removed?;
    Ok(ok)
}
