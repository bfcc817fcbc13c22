//! The out-of-udev worker (`cmd::worker` is its entry): it waits (bounded)
//! for IMDS to agree with a job's verdict, then reconfigures through the
//! backend, records the verdict it reached and journals what happened. Slow
//! and networked work lives here, never in udev's RUN context.
//!
//! A running worker holds an exclusive flock on its job file for its whole
//! run, and unlinks the file (still holding the lock) when done. So a job
//! whose lock can be taken is *stranded*: its worker died (killed, OOM, unit
//! stopped) or never started. Each worker, once its own job is done, sweeps
//! `jobs/` and resumes stranded jobs one at a time; `scan` does the same
//! through detached workers. A stranded job past its deadline (its confirm
//! timeout plus [`crate::jobs::STRANDED_MARGIN_MS`], on the boot clock) is
//! not run but reported: journal, metrics, `status`. A job is never run
//! twice at once.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use crate::backend::{self, Taken, TakenResult};
use crate::clock::boot_ms;
use crate::config::Config;
use crate::decision::{self, Confirm, Confirmation, Verdict};
use crate::imds::{Attachment, Presence};
use crate::jobs::{Job, JobFile};
use crate::scope::Nic;
use crate::state::{State, now_ms};

mod sweep;

use sweep::report_stranded;
pub use sweep::{Sweep, sweep};

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
    /// IMDS agreed, but a selector puts the NIC out of scope: not run.
    Unmanaged(String),
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
    let cloud = crate::host::cloud::metadata_cloud(
        cfg.cloud,
        &crate::host::sysfs::Sysfs::new(&cfg.sysfs_root),
    );
    // IMDS is off in root's configuration (whatever the job asked).
    if !cfg.imds || cloud == crate::host::cloud::Cloud::None {
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
        let Some(mut client) =
            crate::imds::client_for(cloud, cfg.imds_settings(), Some(state.clone()))
        else {
            unreachable!("no metadata client only for --cloud none, handled above");
        };
        let presence = match job.confirm {
            Confirm::Attach => client.attached(&mac),
            _ => client.detached(&mac),
        };
        crate::metrics::add_imds(state, cfg.metrics_file.as_deref(), client.counters());
        spent.attempts += 1;
        spent.requests += client.log().iter().filter(|r| !r.cached).count();
        spent.cached += client.log().iter().filter(|r| r.cached).count();
        let waiting = match decision::confirm(job.confirm, &mac, &presence) {
            Confirmation::Go(verdict, note) => {
                let attachment = match presence {
                    Presence::Attached(a) => Some(a),
                    _ => None,
                };
                return (Confirmed::Go(verdict, attachment, note), spent);
            }
            Confirmation::NoAction(note) => return (Confirmed::NoAction(note), spent),
            Confirmation::Wait(why) => why,
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

/// How a job came to be processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
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

/// One locked job: run it, or report it stranded if past its deadline.
/// Returns whether everything it needed succeeded.
pub(crate) fn process(cfg: &Config, file: JobFile, job: &Job, found: Found) -> Result<bool> {
    let state = cfg.state();
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
    // A selector on the device-number is applied here, where it is known.
    let device_number = match &confirmed {
        Confirmed::Go(_, Some(a), _) => a.device_number.parse::<u32>().ok(),
        _ => job.record(&state).and_then(|r| r.device_number),
    };
    if let Confirmed::Go(_, _, note) = &confirmed {
        let nic = Nic {
            ifname: &job.iface,
            driver: job.driver.as_deref(),
            mac: job.mac.as_deref(),
            device_number,
        };
        if let Some(why) = decision::unmanaged_after_imds(&cfg.scope(), &nic) {
            confirmed = Confirmed::Unmanaged(format!("{note}; {why}"));
        }
    }
    let (verdict, taken, note): (Verdict, Option<Taken>, String) = match &confirmed {
        Confirmed::Go(v, attachment, note) => (
            *v,
            Some(backend::trigger(
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
        Confirmed::Unmanaged(note) => (Verdict::Unmanaged, None, note.clone()),
    };
    let ok = !matches!(confirmed, Confirmed::GaveUp(_))
        && taken
            .as_ref()
            .is_none_or(|t| t.result != TakenResult::Failed);
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
                Confirmed::Unmanaged(_) => "unmanaged",
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
            .map(|t| format!("; {}", t.describe()))
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
        let learnt = job.action == crate::event::Action::Add && device_number.is_some();
        if verdict != job.verdict || learnt {
            state.apply(&lock, &job.update(verdict, &state, device_number))?;
        }
        state.append_journal(&lock, &entry, cfg.journal_max_bytes)?;
        drop(lock);
        crate::metrics::update(&state, cfg.metrics_file.as_deref(), |m| {
            if job.confirm != Confirm::None {
                m.worker_run(&imds_result);
            }
            if let Some(t) = &taken {
                m.reconfiguration(t.backend.as_str(), t.result.as_str());
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
