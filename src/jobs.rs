//! Jobs: work `handle` hands to the out-of-udev worker, one JSON file each
//! under `<state-dir>/jobs/`. A job holds the event, the verdict and the
//! facts the worker needs, never an argv, a path or a timeout (those come
//! from root's configuration). See [`file`] for how a job is claimed, so
//! that it never runs twice at once.

mod file;

use anyhow::Result;
use serde_json::{Value, json};

use crate::clock::{age_ms, boot_ms};
use crate::config::{Backend, Config};
use crate::decision::{Confirm, Decision, Verdict};
use crate::error::{invalid, quote};
use crate::event::{Action, Event};
use crate::evidence::Evidence;
use crate::imds::Attachment;
use crate::state::{State, now_ms};

pub use file::{Claim, JobFile, claim, claim_own, job_paths, pending};

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
            "backend": self.backend.as_str(),
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
    /// The NIC's record (by MAC and device), if any.
    pub(crate) fn record(&self, state: &State) -> Option<crate::state::Record> {
        let (mac, devpath) = self.mac.as_deref().zip(self.devpath.as_deref())?;
        let device = crate::event::device_of(devpath);
        state
            .records_for_mac(Some(mac), device)
            .into_iter()
            .find(|r| r.has_mac(mac) && r.device() == device)
    }

    /// The record change for the verdict the worker reached; for an attach
    /// IMDS confirmed, the device-number it learnt goes into the record.
    pub(crate) fn update(
        &self,
        verdict: Verdict,
        state: &State,
        device_number: Option<u32>,
    ) -> crate::state::Update {
        let prior = self.record(state);
        let present = match (self.action, verdict, device_number, &prior) {
            (Action::Add, Verdict::NewDevice | Verdict::Unmanaged, Some(n), Some(r))
                if r.departed.is_none() =>
            {
                Some(crate::state::Record {
                    device_number: Some(n),
                    ..r.clone()
                })
            }
            _ => None,
        };
        crate::state::Update {
            action: self.action,
            verdict,
            iface: self.iface.clone(),
            old_iface: None,
            devpath: self.devpath.clone(),
            ifindex: self.ifindex,
            present,
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

#[cfg(test)]
mod tests;
