//! Stranded jobs: a job whose lock can be taken has no running worker. A
//! sweep of `jobs/` resumes those within their deadline (here, or through a
//! new detached worker) and reports the others: journal, metrics, `status`.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use super::{Found, process};
use crate::clock::boot_ms;
use crate::config::Config;
use crate::jobs::{Claim, Job, JobFile, STRANDED_MARGIN_MS, claim, job_paths};
use crate::state::{State, now_ms};

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
    let state = &cfg.state();
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
                match crate::dispatch::start_worker(cfg, &path, &job.id) {
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

/// A job past its deadline: not run; removed, logged, journaled, counted.
pub(super) fn report_stranded(
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
    let journaled = state
        .ensure()
        .and_then(|()| state.lock())
        .and_then(|lock| state.append_journal(&lock, entry, max_bytes))
        .and_then(|()| crate::metrics::update(state, prom, |m| m.stranded_jobs += 1));
    if let Err(e) = journaled {
        crate::log::warn(&format!("{e:#}"));
    }
}
