//! What the worker runs once a verdict is confirmed: cloud-init's hotplug
//! FIFO (written as its own `hook-hotplug` writes it), the configured
//! command (no shell, the event in its environment, a process-group
//! timeout), or amazon-ec2-net-utils' per-interface units
//! ([`ec2netutils`]). Nothing here blocks and nothing goes through a shell.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::config::{Backend, Config};
use crate::event::Action;
use crate::imds::Attachment;
use crate::jobs::Job;

pub mod ec2netutils;

use ec2netutils::ec2_net_utils;

/// How a reconfiguration went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakenResult {
    /// Done here (FIFO written, command succeeded).
    Done,
    /// Handed to a worker.
    Dispatched,
    /// Not needed or not possible by configuration (no backend, cloud-init
    /// not listening).
    Skipped,
    Failed,
}

impl TakenResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TakenResult::Done => "done",
            TakenResult::Dispatched => "dispatched",
            TakenResult::Skipped => "skipped",
            TakenResult::Failed => "failed",
        }
    }
}

/// What reconfiguration did, for the log line and the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub backend: Backend,
    pub result: TakenResult,
    pub detail: String,
}

impl Taken {
    pub fn to_json(&self) -> Value {
        json!({
            "backend": self.backend.as_str(),
            "result": self.result.as_str(),
            "detail": self.detail,
        })
    }

    /// `"<backend> <result>: <detail>"`, for log lines.
    pub fn describe(&self) -> String {
        format!(
            "{} {}: {}",
            self.backend.as_str(),
            self.result.as_str(),
            self.detail
        )
    }
}

pub(crate) fn taken(backend: Backend, result: TakenResult, detail: String) -> Taken {
    Taken {
        backend,
        result,
        detail,
    }
}

/// From the worker, once IMDS agrees (or no confirmation was needed): the
/// job's backend kind, with the FIFO, argv and timeout of the worker's own
/// configuration (never the job's).
pub fn trigger(cfg: &Config, job: &Job, attachment: Option<&Attachment>) -> Taken {
    match job.backend {
        Backend::None => taken(
            Backend::None,
            TakenResult::Skipped,
            "no backend configured".into(),
        ),
        Backend::CloudInit => cloud_init(cfg, job.action, job.devpath.as_deref()),
        Backend::Command => {
            let Some(program) = cfg.command.first() else {
                return taken(
                    Backend::Command,
                    TakenResult::Failed,
                    "no command configured (--command, or \"command\" in the config file)".into(),
                );
            };
            let ran = run_command(job, &cfg.command, cfg.command_timeout_secs, attachment);
            let result = if ran.ok() {
                TakenResult::Done
            } else {
                TakenResult::Failed
            };
            taken(
                Backend::Command,
                result,
                format!("{program} {}", ran.describe()),
            )
        }
        Backend::Ec2NetUtils => ec2_net_utils(cfg, job),
    }
}

/// The line cloud-init's own `hook-hotplug` writes to its FIFO.
pub fn cloud_init_line(devpath: &str, action: Action) -> String {
    format!(
        " --subsystem=net handle --devpath={devpath} --udevaction={}\n",
        action.as_str()
    )
}

/// Forwards the event to cloud-init's hotplug daemon the way cloud-init's
/// `hook-hotplug` does: only when cloud-init is ready (its FIFO exists on
/// systemd hosts; `result.json` exists elsewhere), opening the FIFO
/// read-write so the open cannot block, and non-blocking so a full pipe
/// cannot either.
pub(crate) fn cloud_init(cfg: &Config, action: Action, devpath: Option<&str>) -> Taken {
    let skip = |detail: String| taken(Backend::CloudInit, TakenResult::Skipped, detail);
    if action == Action::Remove && !cfg.cloud_init_forward_remove {
        return skip(
            "remove not forwarded (cloud-init 25.2+ handles add only; set cloud_init_forward_remove)"
                .into(),
        );
    }
    let fifo = &cfg.cloud_init_fifo;
    let is_fifo = fs::metadata(fifo).is_ok_and(|m| m.file_type().is_fifo());
    if cfg.systemd_booted() && !is_fifo {
        return skip(format!(
            "cloud-init hotplug is not listening ({} is not a FIFO)",
            fifo.display()
        ));
    }
    if !cfg.systemd_booted() && !cfg.cloud_init_result.exists() {
        return skip(format!(
            "cloud-init has not finished ({} missing)",
            cfg.cloud_init_result.display()
        ));
    }
    if !is_fifo {
        return skip(format!("{} is not a FIFO", fifo.display()));
    }
    let Some(devpath) = devpath else {
        return taken(
            Backend::CloudInit,
            TakenResult::Failed,
            "no DEVPATH to forward".into(),
        );
    };
    let line = cloud_init_line(devpath, action);
    match write_fifo(fifo, &line) {
        Ok(()) => taken(
            Backend::CloudInit,
            TakenResult::Done,
            format!("wrote {:?} to {}", line.trim_end(), fifo.display()),
        ),
        Err(e) => taken(Backend::CloudInit, TakenResult::Failed, format!("{e:#}")),
    }
}

fn write_fifo(fifo: &Path, line: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(fifo)
        .with_context(|| format!("failed to open {}", fifo.display()))?;
    // Re-check on the open file: the path may have been swapped since.
    if !f.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
        bail!("{} is not a FIFO", fifo.display());
    }
    f.write_all(line.as_bytes()).with_context(|| {
        format!(
            "failed to write to {} (is cloud-init reading it?)",
            fifo.display()
        )
    })
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
    cmd.args(args).env_clear().envs(job.env(job.verdict, imds));
    run_until(cmd, deadline_in(timeout_secs))
}

/// `secs` from now (a huge timeout is a very distant deadline, not a panic).
pub(crate) fn deadline_in(secs: u64) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(secs))
        .or_else(|| now.checked_add(Duration::from_secs(u32::MAX.into())))
        .unwrap_or(now)
}

/// Runs `cmd` (stdin from /dev/null, in its own process group) and waits
/// for it until `deadline`, then kills its whole process group.
pub(crate) fn run_until(mut cmd: Command, deadline: Instant) -> Ran {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null()).process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ran::FailedToStart(format!("{program}: {e}")),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_init_line_matches_hook_hotplug() {
        assert_eq!(
            cloud_init_line("/devices/pci0000:00/0000:00:06.0/net/ens6", Action::Add),
            " --subsystem=net handle --devpath=/devices/pci0000:00/0000:00:06.0/net/ens6 --udevaction=add\n"
        );
    }
}
