//! How a worker is started outside udev: `systemctl start --no-block` of
//! the template unit, `systemd-run --no-block`, or a double fork + `setsid`
//! on hosts without systemd; and what `handle` hands over (a job file, or a
//! cloud-init FIFO line). Nothing here blocks udev or touches the network.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, setsid};

use crate::backend::{self, Taken, TakenResult};
use crate::config::{Backend, Config, Dispatch};
use crate::decision::{self, Confirm, Decision};
use crate::event::Event;
use crate::evidence::Evidence;
use crate::jobs::Job;
use crate::state::{State, write_atomic};

/// From `handle`, in udev context: decides what reconfiguration an event
/// needs and starts it without blocking and without touching the network.
/// `None` when the verdict needs nothing. Failures are reported in the
/// returned value: the event itself was handled.
pub fn reconfigure(
    cfg: &Config,
    state: &State,
    event: &Event,
    ev: &Evidence,
    decision: &Decision,
) -> Option<Taken> {
    let needs = decision::confirmation_for(decision, ev)?;
    let reconfigures = decision.verdict.triggers_reconfig();
    if cfg.backend == Backend::None {
        return reconfigures.then(|| {
            backend::taken(
                Backend::None,
                TakenResult::Skipped,
                "no backend configured".into(),
            )
        });
    }
    let confirm = match (cfg.imds && ev.mac().is_some(), needs) {
        (true, c) => c,
        // Without IMDS there is no tie-break: an unbind stays an unbind.
        (false, Confirm::Tiebreak) => return None,
        (false, _) => Confirm::None,
    };
    if cfg.backend == Backend::CloudInit && confirm == Confirm::None {
        // A local, non-blocking FIFO write: fine inside udev.
        return Some(backend::cloud_init(
            cfg,
            event.action,
            ev.devpath.as_deref(),
        ));
    }
    let job = Job::from_event(cfg, event, ev, decision, confirm);
    Some(match dispatch_job(cfg, state, &job) {
        Ok(detail) => backend::taken(cfg.backend, TakenResult::Dispatched, detail),
        Err(e) => backend::taken(cfg.backend, TakenResult::Failed, format!("{e:#}")),
    })
}

/// Writes the job file (0600) and starts the worker outside udevd.
fn dispatch_job(cfg: &Config, state: &State, job: &Job) -> Result<String> {
    state.ensure()?;
    let path = state.jobs_dir().join(format!("{}.json", job.id));
    write_atomic(&path, job.to_json().to_string().as_bytes(), 0o600)?;
    let result = start_worker(cfg, &path, &job.id);
    if result.is_err() {
        let _ = fs::remove_file(&path);
    }
    result
}

/// Starts a worker for `job`. It gets the hook's own settings (the config
/// file it loaded and the flags it was given, [`Config::invocation`]), never
/// any from the job file. The template unit cannot carry arguments: it runs
/// the worker with the default config file, as the hook run by udev has it.
pub(crate) fn start_worker(cfg: &Config, job: &Path, id: &str) -> Result<String> {
    let exe = std::env::current_exe().context("failed to find our own executable")?;
    let mut worker_args: Vec<std::ffi::OsString> = cfg.invocation.clone();
    worker_args.extend(["worker".into(), "--job".into(), job.as_os_str().to_owned()]);
    let dispatch = match cfg.dispatch {
        Dispatch::Auto if cfg.systemd_booted() => Dispatch::Systemctl,
        Dispatch::Auto => Dispatch::Fork,
        d => d,
    };
    match dispatch {
        Dispatch::Systemctl => {
            let unit = format!("{}@{}.service", cfg.worker_unit, escape_path(job)?);
            run_quick(Command::new("systemctl").args(["start", "--no-block", &unit]))?;
            Ok(format!("started {unit}"))
        }
        Dispatch::SystemdRun => {
            let unit = format!("{}-{id}", cfg.worker_unit);
            let mut cmd = Command::new("systemd-run");
            cmd.args(["--no-block", "--quiet", "--collect"])
                .arg(format!("--unit={unit}"))
                .arg(format!(
                    "--property=TimeoutStartSec={}",
                    cfg.command_timeout_secs + 30
                ))
                .arg(&exe)
                .args(&worker_args);
            run_quick(&mut cmd)?;
            Ok(format!("started transient unit {unit}.service"))
        }
        Dispatch::Fork | Dispatch::Auto => {
            let args: Vec<&std::ffi::OsStr> = worker_args.iter().map(|a| a.as_os_str()).collect();
            let pid = spawn_detached(&exe, &args)?;
            Ok(format!("forked worker pid {pid}"))
        }
    }
}

/// Runs a short command (systemctl, systemd-run) with no shell and a bound
/// on how long we wait for it.
fn run_quick(cmd: &mut Command) -> Result<()> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to run {name}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut pause = Duration::from_micros(500);
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = (&mut e).take(4096).read_to_string(&mut err);
            }
            bail!("{name} failed ({status}): {}", err.trim());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} did not finish within 5 s");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Starts `exe args` fully detached: fork, setsid, fork again and exec, with
/// stdio on /dev/null. The intermediate child exits at once, so the worker is
/// re-parented to init and outlives us. Returns the worker's pid.
pub fn spawn_detached(exe: &Path, args: &[&std::ffi::OsStr]) -> Result<u32> {
    let (read_fd, write_fd) = nix::unistd::pipe().context("failed to create a pipe")?;
    // SAFETY: we are single-threaded here; the child only calls setsid,
    // spawns and _exits.
    match unsafe { fork() }.context("failed to fork")? {
        ForkResult::Child => {
            drop(read_fd);
            let code = (|| -> Option<()> {
                setsid().ok()?;
                let child = Command::new(exe)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()?;
                let mut w = fs::File::from(write_fd);
                w.write_all(&child.id().to_le_bytes()).ok()
            })()
            .map_or(1, |()| 0);
            // SAFETY: _exit skips destructors and atexit handlers that belong
            // to the parent.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write_fd);
            let _ = waitpid(child, None);
            let mut buf = [0u8; 4];
            use std::io::Read;
            fs::File::from(read_fd)
                .read_exact(&mut buf)
                .context("the detached worker failed to start")?;
            Ok(u32::from_le_bytes(buf))
        }
    }
}

/// systemd's path escaping, exactly as `systemd-escape --path` does it
/// (`unit_name_path_escape()`): the path is simplified (repeated `/` and `.`
/// components dropped, trailing `/` removed), `/` alone becomes `-`, a path
/// with a `..` component (or not absolute) is refused; then `/` becomes `-`, a leading `.` and
/// every byte outside `[A-Za-z0-9:_.]` becomes `\xNN` (non-ASCII per byte).
pub fn escape_path(path: &Path) -> Result<String> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if !bytes.starts_with(b"/") {
        bail!(
            "cannot escape {} as a unit name: not an absolute path",
            path.display()
        );
    }
    let parts: Vec<&[u8]> = bytes
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if parts.iter().any(|c| *c == b"..") {
        bail!(
            "cannot escape {} as a unit name: it has a .. component",
            path.display()
        );
    }
    if parts.is_empty() {
        return Ok("-".into());
    }
    let joined = parts.join(&b'/');
    let mut out = String::new();
    for (i, &b) in joined.iter().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    Ok(out)
}

/// The job path a template unit instance stands for (`%f`).
pub fn unescape_instance(instance: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = instance.as_bytes();
    let mut out = vec![b'/'];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' => out.push(b'/'),
            b'\\' if i + 3 < bytes.len() && bytes[i + 1] == b'x' => {
                if let (Some(h), Some(l)) = (hex(bytes[i + 2]), hex(bytes[i + 3])) {
                    out.push(h << 4 | l);
                    i += 4;
                    continue;
                }
                out.push(b'\\');
            }
            b => out.push(b),
        }
        i += 1;
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_path_escaping() {
        let table = [
            (
                "/run/hotplug-hook/jobs/1-2.json",
                "run-hotplug\\x2dhook-jobs-1\\x2d2.json",
            ),
            ("/a b/c", "a\\x20b-c"),
            ("/.x", "\\x2ex"),
        ];
        for (path, want) in table {
            assert_eq!(escape_path(Path::new(path)).unwrap(), want);
            assert_eq!(unescape_instance(want), PathBuf::from(path));
        }
    }
}
