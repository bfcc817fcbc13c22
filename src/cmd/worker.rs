//! `hotplug-hook worker --job FILE`: run one reconfiguration job outside
//! udev (what `hotplug-hook-worker@.service`, `systemd-run` or a detached
//! fork start), then resume the state dir's stranded jobs.

use std::fs;
use std::path::Path;

use anyhow::Result;

use crate::config::Config;
use crate::error::invalid;
use crate::jobs::{Claim, claim_own};
use crate::state::State;
use crate::worker::{Found, Sweep, process, sweep};

/// `hotplug-hook worker --job FILE`: take the job's lock, confirm,
/// reconfigure, remove the job, journal (in the state dir of the `handle`
/// that wrote the job); then resume the state dir's stranded jobs, one at a
/// time. Returns whether everything its own job needed succeeded. A job
/// another worker holds, or already finished, is left alone (exit 0).
pub(crate) fn run(cfg: &Config, job_path: &Path) -> Result<bool> {
    let state = cfg.state();
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
