//! Settings: every one declared once, in the table below, with its type,
//! default, help and the subcommands that use it. From that table come the
//! config-file keys, the flags (a key with `_` → `-`: `"settle_ms"` ↔
//! `--settle-ms`), each subcommand's help, the defaults and the checks in
//! [`Settings::resolve`], the worker's arguments ([`Settings::to_args`]) and
//! the JSON form ([`Config::to_json`]); tests hold the README and the man
//! page to it.
//!
//! Precedence: defaults, then the JSON config file, then the environment
//! (`HOTPLUG_HOOK_IMDS_ENDPOINT`), then flags.

#[macro_use]
mod define;
mod kind;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde_json::Value;

pub use define::Setting;
use kind::Kind;

use crate::error::{invalid, quote};
use crate::log::LogMode;
use crate::scope::Selector;

/// Where reconfiguration goes for `new-device` and `device-removed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Log only.
    None,
    /// Forward the event to cloud-init's hotplug FIFO.
    CloudInit,
    /// Run the configured argv outside udev.
    Command,
    /// Start and stop amazon-ec2-net-utils' per-interface units outside udev.
    #[value(name = "ec2-net-utils")]
    Ec2NetUtils,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::CloudInit => "cloud-init",
            Backend::Command => "command",
            Backend::Ec2NetUtils => "ec2-net-utils",
        }
    }
}

/// How the `command` backend's worker is started outside udevd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dispatch {
    /// `systemctl` on systemd hosts, `fork` elsewhere.
    Auto,
    /// `systemctl start --no-block <worker-unit>@<job>.service`.
    Systemctl,
    /// `systemd-run --no-block` a transient unit.
    SystemdRun,
    /// Double fork and setsid (hosts without systemd).
    Fork,
}

// The settings. Each entry: `/// help`, then
// `key: Type = default, "VALUE-NAME", [subcommands that use it];`
// under the help heading it is listed with. A subcommand's help lists the
// settings it uses; every subcommand accepts all of them (before or after
// its name), as the config file may set any of them.
settings! {
    "Host and state" {
        /// sysfs mount to read devices from
        sysfs_root: PathBuf = "/sys", "DIR", [handle classify scan reconcile];
        /// Where records, the journal, jobs, caches and counters live
        state_dir: PathBuf = "/run/hotplug-hook", "DIR", [handle classify scan status imds worker reconcile];
        /// Longest wait for the state lock, in ms; past it the event is logged, not recorded (exit 4)
        lock_wait_ms: u64 = 1000, "MS", [handle scan worker reconcile];
        /// Rotate the event journal past this size
        journal_max_bytes: u64 = 1 << 20, "BYTES", [handle scan worker reconcile];
        /// Present on hosts booted with systemd
        systemd_dir: PathBuf = "/run/systemd/system", "DIR", [handle scan worker reconcile];
    }
    "Decision" {
        /// Longest wait for an unbound device to settle, in ms
        settle_ms: u64 = 300, "MS", [handle classify];
        /// Interval between sysfs polls in the settle window, in ms
        poll_ms: u64 = 10, "MS", [handle classify];
        /// An add within this many seconds of a transient remove is device-returned
        return_window_secs: u64 = 300, "SECS", [handle classify];
        /// Treat virtual devices (veth, bridge, ...) as NICs
        handle_virtual: bool = false, "BOOL", [handle classify scan reconcile];
        /// NICs to manage, one JSON selector per flag: any of ifname (glob), driver, mac, device_number ("0", "1-3", "1-"); none: every NIC
        manage: Vec<Selector> = Vec::new(), "JSON", [handle classify reconcile worker];
        /// NICs to leave alone (verdict unmanaged), selectors as for --manage; wins over --manage
        ignore: Vec<Selector> = Vec::new(), "JSON", [handle classify reconcile worker];
    }
    "Reconfiguration" {
        /// Reconfiguration backend (command when --command is given)
        backend: Backend = Backend::None, "BACKEND", [handle reconcile];
        /// cloud-init's hotplug FIFO
        cloud_init_fifo: PathBuf = "/run/cloud-init/share/hook-hotplug-cmd", "PATH", [handle worker reconcile];
        /// cloud-init's "finished" marker, checked on hosts without systemd
        cloud_init_result: PathBuf = "/run/cloud-init/result.json", "PATH", [handle worker reconcile];
        /// Forward remove events to cloud-init too (cloud-init 25.2 and later refuse them)
        cloud_init_forward_remove: bool = false, "BOOL", [handle worker reconcile];
        /// One argv element of the command backend; repeat for each
        command: Vec<String> = Vec::new(), "ARG", [handle worker reconcile];
        /// The worker kills the command after this many seconds
        command_timeout_secs: u64 = 120, "SECS", [handle scan worker reconcile];
        /// systemctl that the ec2-net-utils backend runs, as amazon-ec2-net-utils' udev rule does
        ec2_net_utils_systemctl: PathBuf = "/usr/bin/systemctl", "PATH", [worker];
        /// Where amazon-ec2-net-utils writes 70-IFACE.network; the ec2-net-utils backend removes a detached ENI's
        ec2_net_utils_network_dir: PathBuf = "/run/systemd/network", "DIR", [worker];
        /// How the worker is started outside udevd
        dispatch: Dispatch = Dispatch::Auto, "HOW", [handle scan reconcile];
        /// The worker's template unit name, without @.service
        worker_unit: String = "hotplug-hook-worker", "NAME", [handle scan reconcile];
    }
    "IMDS" {
        /// Cloud whose NICs and metadata service to expect; auto reads DMI (the IMDS settings apply to every cloud's metadata service unless marked EC2 only)
        cloud: crate::host::cloud::CloudSetting = crate::host::cloud::CloudSetting::Auto, "CLOUD", [handle classify worker reconcile];
        /// Confirm attach/detach in IMDS (out of udev only)
        imds: bool = true, "BOOL", [handle classify worker reconcile];
        /// IMDS base URL, or ipv4 / ipv6 (env HOTPLUG_HOOK_IMDS_ENDPOINT)
        imds_endpoint: String = crate::imds::DEFAULT_ENDPOINT, "URL", [classify imds worker reconcile];
        /// Lifetime asked for IMDSv2 tokens, 1 to 21600 s (EC2 only)
        imds_token_ttl_secs: u64 = 21600, "SECS", [classify imds worker reconcile];
        /// Fall back to IMDSv1 when no token can be had (EC2 only)
        imds_v1_fallback: bool = false, "BOOL", [classify imds worker reconcile];
        /// IMDS connect timeout
        imds_connect_timeout_ms: u64 = 250, "MS", [classify imds worker reconcile];
        /// IMDS response timeout
        imds_read_timeout_ms: u64 = 1000, "MS", [classify imds worker reconcile];
        /// Total IMDS time per invocation (per worker attempt)
        imds_deadline_ms: u64 = 3000, "MS", [classify imds worker reconcile];
        /// Retries of a throttled or failed IMDS request (at most 10)
        imds_retries: u32 = 3, "N", [classify imds worker reconcile];
        /// How long the MAC listing is reused
        imds_listing_ttl_ms: u64 = 2000, "MS", [classify imds worker reconcile];
        /// The worker gives up waiting for IMDS to agree after this long
        imds_confirm_timeout_secs: u64 = 120, "SECS", [scan status worker reconcile];
    }
    "Logging and metrics" {
        /// Where log lines go
        log: LogMode = LogMode::Auto, "WHERE", [all];
        /// The journal's native socket
        journal_socket: PathBuf = "/run/systemd/journal/socket", "PATH", [all];
        /// The syslog socket
        syslog_socket: PathBuf = "/dev/log", "PATH", [all];
        /// Prometheus textfile to keep up to date; empty turns it off
        metrics_file: Option<PathBuf> = None, "PATH", [handle classify scan imds worker reconcile];
    }
}

/// Read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/hotplug-hook/config.json";

impl Settings {
    /// Parses a JSON config object. Unknown keys and wrong types are errors,
    /// so a typo never silently falls back to a default.
    pub fn from_json(text: &str) -> Result<Settings> {
        // An empty file (or --config /dev/null) sets nothing.
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        let v: Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let Value::Object(map) = v else {
            return Err(invalid("the config must be a JSON object"));
        };
        let mut s = Settings::default();
        for (key, val) in &map {
            if !s.set_json(key, val)? {
                return Err(invalid(format!("unknown key {}", quote(key))));
            }
        }
        Ok(s)
    }

    /// Fills in defaults and checks the combination.
    pub fn resolve(mut self) -> Result<Config> {
        // The one default that depends on another setting.
        if self.backend.is_none() && self.command.as_ref().is_some_and(|c| !c.is_empty()) {
            self.backend = Some(Backend::Command);
        }
        let mut c = self.or_defaults();
        if c.backend == Backend::Command && c.command.is_empty() {
            return Err(invalid(
                "backend \"command\" needs a command (--command ARG...)",
            ));
        }
        if c.poll_ms == 0 {
            return Err(invalid("poll_ms must be at least 1"));
        }
        if c.worker_unit.is_empty()
            || !c
                .worker_unit
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        {
            return Err(invalid(format!(
                "invalid worker_unit {}",
                quote(&c.worker_unit)
            )));
        }
        c.imds_endpoint = crate::imds::normalize_endpoint(&c.imds_endpoint)?;
        if !(1..=21600).contains(&c.imds_token_ttl_secs) {
            return Err(invalid("imds_token_ttl_secs must be 1 to 21600"));
        }
        c.imds_retries = c.imds_retries.min(10);
        for (key, path) in [
            ("ec2_net_utils_systemctl", &c.ec2_net_utils_systemctl),
            ("ec2_net_utils_network_dir", &c.ec2_net_utils_network_dir),
        ] {
            if !path.is_absolute() {
                return Err(invalid(format!(
                    "{key} must be an absolute path, not {}",
                    quote(&path.to_string_lossy())
                )));
            }
        }
        // udev, the worker unit and a shell run in different directories:
        // a relative state dir would be a different directory for each.
        if !c.state_dir.is_absolute() {
            return Err(invalid(format!(
                "state_dir must be an absolute path, not {}",
                quote(&c.state_dir.to_string_lossy())
            )));
        }
        Ok(c)
    }
}

impl Config {
    /// The state dir, with the configured lock wait.
    pub fn state(&self) -> crate::state::State {
        crate::state::State::new(&self.state_dir)
            .with_lock_wait(std::time::Duration::from_millis(self.lock_wait_ms))
    }

    /// Which NICs are ours (`manage`/`ignore`).
    pub fn scope(&self) -> crate::scope::Scope {
        crate::scope::Scope {
            manage: self.manage.clone(),
            ignore: self.ignore.clone(),
        }
    }

    /// Loads the config file (the given one, which must exist, or the default
    /// one if present) and overlays the flags.
    pub fn load(path: Option<&Path>, flags: Settings) -> Result<Config> {
        let file_path = match path {
            Some(p) => Some(p.to_path_buf()),
            None if Path::new(DEFAULT_CONFIG).exists() => Some(PathBuf::from(DEFAULT_CONFIG)),
            None => None,
        };
        let file = match &file_path {
            Some(p) => Some(read_config(p)?),
            None => None,
        };
        // The environment sits between the file and the flags.
        let env = Settings {
            imds_endpoint: std::env::var("HOTPLUG_HOOK_IMDS_ENDPOINT").ok(),
            ..Settings::default()
        };
        let given = env.overlay(flags);
        let mut invocation = Vec::new();
        if let Some(p) = &file_path {
            invocation.push("--config".into());
            invocation.push(std::path::absolute(p).unwrap_or_else(|_| p.clone()).into());
        }
        invocation.extend(given.to_args());
        let mut cfg = file.unwrap_or_default().overlay(given).resolve()?;
        cfg.invocation = invocation;
        Ok(cfg)
    }

    /// The IMDS client's settings.
    pub fn imds_settings(&self) -> crate::imds::ImdsSettings {
        use std::time::Duration;
        crate::imds::ImdsSettings {
            endpoint: self.imds_endpoint.clone(),
            token_ttl_secs: self.imds_token_ttl_secs,
            v1_fallback: self.imds_v1_fallback,
            connect_timeout: Duration::from_millis(self.imds_connect_timeout_ms),
            read_timeout: Duration::from_millis(self.imds_read_timeout_ms),
            deadline: Duration::from_millis(self.imds_deadline_ms),
            retries: self.imds_retries,
            listing_ttl: Duration::from_millis(self.imds_listing_ttl_ms),
            max_body: 64 * 1024,
        }
    }

    /// True on hosts booted with systemd.
    pub fn systemd_booted(&self) -> bool {
        self.systemd_dir.is_dir()
    }
}

fn read_config(path: &Path) -> Result<Settings> {
    // A config file is small; never read more than this of one.
    const MAX: u64 = 1 << 20;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX + 1), &mut bytes))
        .map_err(|e| invalid(format!("failed to read config {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX {
        return Err(invalid(format!(
            "invalid config {}: larger than {MAX} bytes",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| invalid(format!("invalid config {}: not UTF-8", path.display())))?;
    Settings::from_json(&text).with_context(|| format!("invalid config {}", path.display()))
}
