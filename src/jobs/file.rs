//! A job file and its lock. A running worker holds an exclusive flock on
//! its job file for its whole run and unlinks the file (still holding the
//! lock) when done, so a job whose lock can be taken is *stranded*: its
//! worker died or never started.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::geteuid;
use serde_json::{Value, json};

use super::{Job, MAX_JOB_BYTES};
use crate::config::Config;
use crate::error::invalid;
use crate::state::State;

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
pub(super) fn open_job(path: &Path) -> Result<Option<File>> {
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

pub(super) fn linked(file: &File) -> bool {
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
pub fn claim_own(path: &Path) -> Result<Claim> {
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
pub fn job_paths(dir: &Path) -> Vec<PathBuf> {
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
