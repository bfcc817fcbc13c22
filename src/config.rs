//! Settings: defaults, overlaid by the JSON config file, overlaid by flags.
//!
//! Every config key is a long flag's name with `-` replaced by `_`
//! (`--settle-ms` ↔ `"settle_ms"`), so the two never drift apart.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde_json::Value;

use crate::error::{invalid, quote};
use crate::log::LogMode;

/// Where reconfiguration goes for `new-device` and `device-removed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Log only.
    None,
    /// Forward the event to cloud-init's hotplug FIFO.
    CloudInit,
    /// Run the configured argv outside udev.
    Command,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::CloudInit => "cloud-init",
            Backend::Command => "command",
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

/// Settings as given by one source; `None` means "not set here".
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Settings {
    /// sysfs mount to read devices from [default: /sys]
    #[arg(long, global = true, value_name = "DIR")]
    pub sysfs_root: Option<PathBuf>,
    /// Where records, the journal and jobs live [default: /run/hotplug-hook]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Longest wait for an unbound device to settle, in ms [default: 300]
    #[arg(long, global = true, value_name = "MS")]
    pub settle_ms: Option<u64>,
    /// Interval between sysfs polls in the settle window, in ms [default: 10]
    #[arg(long, global = true, value_name = "MS")]
    pub poll_ms: Option<u64>,
    /// An add within this many seconds of a transient remove is
    /// device-returned [default: 300]
    #[arg(long, global = true, value_name = "SECS")]
    pub return_window_secs: Option<u64>,
    /// Treat virtual devices (veth, bridge, ...) as NICs [default: false]
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub handle_virtual: Option<bool>,
    /// Reconfiguration backend [default: none]
    #[arg(long, global = true, value_enum)]
    pub backend: Option<Backend>,
    /// cloud-init's hotplug FIFO [default: /run/cloud-init/share/hook-hotplug-cmd]
    #[arg(long, global = true, value_name = "PATH")]
    pub cloud_init_fifo: Option<PathBuf>,
    /// cloud-init's "finished" marker, checked on hosts without systemd
    /// [default: /run/cloud-init/result.json]
    #[arg(long, global = true, value_name = "PATH")]
    pub cloud_init_result: Option<PathBuf>,
    /// Forward remove events to cloud-init too (cloud-init 25.2 and later
    /// refuse them) [default: false]
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub cloud_init_forward_remove: Option<bool>,
    /// One argv element of the command backend; repeat for each
    #[arg(long = "command", global = true, value_name = "ARG")]
    pub command: Vec<String>,
    /// The worker kills the command after this many seconds [default: 120]
    #[arg(long, global = true, value_name = "SECS")]
    pub command_timeout_secs: Option<u64>,
    /// How the worker is started outside udevd [default: auto]
    #[arg(long, global = true, value_enum)]
    pub dispatch: Option<Dispatch>,
    /// The worker's template unit name, without `@.service`
    /// [default: hotplug-hook-worker]
    #[arg(long, global = true, value_name = "NAME")]
    pub worker_unit: Option<String>,
    /// Present on hosts booted with systemd [default: /run/systemd/system]
    #[arg(long, global = true, value_name = "DIR")]
    pub systemd_dir: Option<PathBuf>,
    /// Rotate the journal past this size [default: 1048576]
    #[arg(long, global = true, value_name = "BYTES")]
    pub journal_max_bytes: Option<u64>,
    /// Confirm attach/detach in IMDS (out of udev only) [default: true]
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub imds: Option<bool>,
    /// IMDS base URL, or ipv4 / ipv6 (env HOTPLUG_HOOK_IMDS_ENDPOINT)
    /// [default: http://169.254.169.254]
    #[arg(long, global = true, value_name = "URL")]
    pub imds_endpoint: Option<String>,
    /// Lifetime asked for IMDSv2 tokens [default: 21600]
    #[arg(long, global = true, value_name = "SECS")]
    pub imds_token_ttl_secs: Option<u64>,
    /// Fall back to IMDSv1 when no token can be had [default: false]
    #[arg(long, global = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub imds_v1_fallback: Option<bool>,
    /// IMDS connect timeout [default: 250]
    #[arg(long, global = true, value_name = "MS")]
    pub imds_connect_timeout_ms: Option<u64>,
    /// IMDS response timeout [default: 1000]
    #[arg(long, global = true, value_name = "MS")]
    pub imds_read_timeout_ms: Option<u64>,
    /// Total IMDS time per invocation (per worker attempt) [default: 3000]
    #[arg(long, global = true, value_name = "MS")]
    pub imds_deadline_ms: Option<u64>,
    /// Retries of a throttled or failed IMDS request [default: 3]
    #[arg(long, global = true, value_name = "N")]
    pub imds_retries: Option<u32>,
    /// How long the MAC listing is reused [default: 2000]
    #[arg(long, global = true, value_name = "MS")]
    pub imds_listing_ttl_ms: Option<u64>,
    /// The worker gives up waiting for IMDS to agree after this long [default: 120]
    #[arg(long, global = true, value_name = "SECS")]
    pub imds_confirm_timeout_secs: Option<u64>,
    /// Where log lines go [default: auto]
    #[arg(long, global = true, value_enum)]
    pub log: Option<LogMode>,
    /// The journal's native socket [default: /run/systemd/journal/socket]
    #[arg(long, global = true, value_name = "PATH")]
    pub journal_socket: Option<PathBuf>,
    /// The syslog socket [default: /dev/log]
    #[arg(long, global = true, value_name = "PATH")]
    pub syslog_socket: Option<PathBuf>,
    /// Prometheus textfile to keep up to date, e.g.
    /// /var/lib/node_exporter/textfile_collector/hotplug_hook.prom [default: off]
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

/// The settings in force.
#[derive(Clone, Debug)]
pub struct Config {
    /// The global arguments that give a worker these same settings: the
    /// config file this was loaded from (`--config`) and every setting the
    /// command line or the environment gave. What `handle` passes to the
    /// worker it starts, so a worker never takes settings from a job file.
    pub invocation: Vec<std::ffi::OsString>,
    pub sysfs_root: PathBuf,
    pub state_dir: PathBuf,
    pub settle_ms: u64,
    pub poll_ms: u64,
    pub return_window_secs: u64,
    pub handle_virtual: bool,
    pub backend: Backend,
    pub cloud_init_fifo: PathBuf,
    pub cloud_init_result: PathBuf,
    pub cloud_init_forward_remove: bool,
    pub command: Vec<String>,
    pub command_timeout_secs: u64,
    pub dispatch: Dispatch,
    pub worker_unit: String,
    pub systemd_dir: PathBuf,
    pub journal_max_bytes: u64,
    pub imds: bool,
    pub imds_endpoint: String,
    pub imds_token_ttl_secs: u64,
    pub imds_v1_fallback: bool,
    pub imds_connect_timeout_ms: u64,
    pub imds_read_timeout_ms: u64,
    pub imds_deadline_ms: u64,
    pub imds_retries: u32,
    pub imds_listing_ttl_ms: u64,
    pub imds_confirm_timeout_secs: u64,
    pub log: LogMode,
    pub journal_socket: PathBuf,
    pub syslog_socket: PathBuf,
    pub metrics_file: Option<PathBuf>,
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
            let path = || str_of(key, val).map(|p| Some(PathBuf::from(p)));
            match key.as_str() {
                "sysfs_root" => s.sysfs_root = path()?,
                "state_dir" => s.state_dir = path()?,
                "settle_ms" => s.settle_ms = Some(u64_of(key, val)?),
                "poll_ms" => s.poll_ms = Some(u64_of(key, val)?),
                "return_window_secs" => s.return_window_secs = Some(u64_of(key, val)?),
                "handle_virtual" => s.handle_virtual = Some(bool_of(key, val)?),
                "backend" => s.backend = Some(enum_of(key, val)?),
                "cloud_init_fifo" => s.cloud_init_fifo = path()?,
                "cloud_init_result" => s.cloud_init_result = path()?,
                "cloud_init_forward_remove" => {
                    s.cloud_init_forward_remove = Some(bool_of(key, val)?)
                }
                "command" => {
                    let items = val
                        .as_array()
                        .ok_or_else(|| wrong(key, "an array of strings"))?;
                    s.command = items
                        .iter()
                        .map(|i| str_of(key, i).map(str::to_string))
                        .collect::<Result<_>>()?;
                }
                "command_timeout_secs" => s.command_timeout_secs = Some(u64_of(key, val)?),
                "dispatch" => s.dispatch = Some(enum_of(key, val)?),
                "worker_unit" => s.worker_unit = Some(str_of(key, val)?.to_string()),
                "systemd_dir" => s.systemd_dir = path()?,
                "journal_max_bytes" => s.journal_max_bytes = Some(u64_of(key, val)?),
                "imds" => s.imds = Some(bool_of(key, val)?),
                "imds_endpoint" => s.imds_endpoint = Some(str_of(key, val)?.to_string()),
                "imds_token_ttl_secs" => s.imds_token_ttl_secs = Some(u64_of(key, val)?),
                "imds_v1_fallback" => s.imds_v1_fallback = Some(bool_of(key, val)?),
                "imds_connect_timeout_ms" => s.imds_connect_timeout_ms = Some(u64_of(key, val)?),
                "imds_read_timeout_ms" => s.imds_read_timeout_ms = Some(u64_of(key, val)?),
                "imds_deadline_ms" => s.imds_deadline_ms = Some(u64_of(key, val)?),
                "imds_retries" => {
                    s.imds_retries = Some(
                        u32::try_from(u64_of(key, val)?)
                            .map_err(|_| wrong(key, "a small integer"))?,
                    )
                }
                "imds_listing_ttl_ms" => s.imds_listing_ttl_ms = Some(u64_of(key, val)?),
                "imds_confirm_timeout_secs" => {
                    s.imds_confirm_timeout_secs = Some(u64_of(key, val)?)
                }
                "log" => s.log = Some(enum_of(key, val)?),
                "journal_socket" => s.journal_socket = path()?,
                "syslog_socket" => s.syslog_socket = path()?,
                // null turns it off (a job's config carries it so).
                "metrics_file" if val.is_null() => s.metrics_file = None,
                "metrics_file" => s.metrics_file = path()?,
                other => return Err(invalid(format!("unknown key {}", quote(other)))),
            }
        }
        Ok(s)
    }

    /// The command-line flags that set what `self` sets (and nothing else).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        use std::ffi::OsString;
        fn flag(out: &mut Vec<OsString>, name: &str, value: impl Into<OsString>) {
            out.push(format!("--{name}").into());
            out.push(value.into());
        }
        fn path(out: &mut Vec<OsString>, name: &str, v: &Option<PathBuf>) {
            if let Some(p) = v {
                flag(out, name, p.clone());
            }
        }
        fn num(out: &mut Vec<OsString>, name: &str, v: Option<impl ToString>) {
            if let Some(n) = v {
                flag(out, name, n.to_string());
            }
        }
        fn boolean(out: &mut Vec<OsString>, name: &str, v: Option<bool>) {
            if let Some(b) = v {
                out.push(format!("--{name}={b}").into());
            }
        }
        fn choice<T: ValueEnum>(out: &mut Vec<OsString>, name: &str, v: Option<T>) {
            if let Some(p) = v.as_ref().and_then(T::to_possible_value) {
                flag(out, name, p.get_name());
            }
        }
        let mut a = Vec::new();
        path(&mut a, "sysfs-root", &self.sysfs_root);
        path(&mut a, "state-dir", &self.state_dir);
        num(&mut a, "settle-ms", self.settle_ms);
        num(&mut a, "poll-ms", self.poll_ms);
        num(&mut a, "return-window-secs", self.return_window_secs);
        boolean(&mut a, "handle-virtual", self.handle_virtual);
        choice(&mut a, "backend", self.backend);
        path(&mut a, "cloud-init-fifo", &self.cloud_init_fifo);
        path(&mut a, "cloud-init-result", &self.cloud_init_result);
        boolean(
            &mut a,
            "cloud-init-forward-remove",
            self.cloud_init_forward_remove,
        );
        for c in &self.command {
            flag(&mut a, "command", c);
        }
        num(&mut a, "command-timeout-secs", self.command_timeout_secs);
        choice(&mut a, "dispatch", self.dispatch);
        num(&mut a, "worker-unit", self.worker_unit.as_ref());
        path(&mut a, "systemd-dir", &self.systemd_dir);
        num(&mut a, "journal-max-bytes", self.journal_max_bytes);
        boolean(&mut a, "imds", self.imds);
        num(&mut a, "imds-endpoint", self.imds_endpoint.as_ref());
        num(&mut a, "imds-token-ttl-secs", self.imds_token_ttl_secs);
        boolean(&mut a, "imds-v1-fallback", self.imds_v1_fallback);
        num(
            &mut a,
            "imds-connect-timeout-ms",
            self.imds_connect_timeout_ms,
        );
        num(&mut a, "imds-read-timeout-ms", self.imds_read_timeout_ms);
        num(&mut a, "imds-deadline-ms", self.imds_deadline_ms);
        num(&mut a, "imds-retries", self.imds_retries);
        num(&mut a, "imds-listing-ttl-ms", self.imds_listing_ttl_ms);
        num(
            &mut a,
            "imds-confirm-timeout-secs",
            self.imds_confirm_timeout_secs,
        );
        choice(&mut a, "log", self.log);
        path(&mut a, "journal-socket", &self.journal_socket);
        path(&mut a, "syslog-socket", &self.syslog_socket);
        path(&mut a, "metrics-file", &self.metrics_file);
        a
    }

    /// `self` with every setting that `over` sets replaced.
    pub fn overlay(self, over: Settings) -> Settings {
        Settings {
            sysfs_root: over.sysfs_root.or(self.sysfs_root),
            state_dir: over.state_dir.or(self.state_dir),
            settle_ms: over.settle_ms.or(self.settle_ms),
            poll_ms: over.poll_ms.or(self.poll_ms),
            return_window_secs: over.return_window_secs.or(self.return_window_secs),
            handle_virtual: over.handle_virtual.or(self.handle_virtual),
            backend: over.backend.or(self.backend),
            cloud_init_fifo: over.cloud_init_fifo.or(self.cloud_init_fifo),
            cloud_init_result: over.cloud_init_result.or(self.cloud_init_result),
            cloud_init_forward_remove: over
                .cloud_init_forward_remove
                .or(self.cloud_init_forward_remove),
            command: if over.command.is_empty() {
                self.command
            } else {
                over.command
            },
            command_timeout_secs: over.command_timeout_secs.or(self.command_timeout_secs),
            dispatch: over.dispatch.or(self.dispatch),
            worker_unit: over.worker_unit.or(self.worker_unit),
            systemd_dir: over.systemd_dir.or(self.systemd_dir),
            journal_max_bytes: over.journal_max_bytes.or(self.journal_max_bytes),
            imds: over.imds.or(self.imds),
            imds_endpoint: over.imds_endpoint.or(self.imds_endpoint),
            imds_token_ttl_secs: over.imds_token_ttl_secs.or(self.imds_token_ttl_secs),
            imds_v1_fallback: over.imds_v1_fallback.or(self.imds_v1_fallback),
            imds_connect_timeout_ms: over
                .imds_connect_timeout_ms
                .or(self.imds_connect_timeout_ms),
            imds_read_timeout_ms: over.imds_read_timeout_ms.or(self.imds_read_timeout_ms),
            imds_deadline_ms: over.imds_deadline_ms.or(self.imds_deadline_ms),
            imds_retries: over.imds_retries.or(self.imds_retries),
            imds_listing_ttl_ms: over.imds_listing_ttl_ms.or(self.imds_listing_ttl_ms),
            imds_confirm_timeout_secs: over
                .imds_confirm_timeout_secs
                .or(self.imds_confirm_timeout_secs),
            log: over.log.or(self.log),
            journal_socket: over.journal_socket.or(self.journal_socket),
            syslog_socket: over.syslog_socket.or(self.syslog_socket),
            metrics_file: over.metrics_file.or(self.metrics_file),
        }
    }

    /// Fills in defaults and checks the combination.
    pub fn resolve(self) -> Result<Config> {
        let backend = self.backend.unwrap_or(if self.command.is_empty() {
            Backend::None
        } else {
            Backend::Command
        });
        if backend == Backend::Command && self.command.is_empty() {
            return Err(invalid(
                "backend \"command\" needs a command (--command ARG...)",
            ));
        }
        let poll_ms = self.poll_ms.unwrap_or(10);
        if poll_ms == 0 {
            return Err(invalid("poll_ms must be at least 1"));
        }
        let worker_unit = self
            .worker_unit
            .unwrap_or_else(|| "hotplug-hook-worker".into());
        if worker_unit.is_empty()
            || !worker_unit
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(format!(
                "invalid worker_unit {}",
                quote(&worker_unit)
            )));
        }
        let imds_endpoint = crate::imds::normalize_endpoint(
            self.imds_endpoint
                .as_deref()
                .unwrap_or(crate::imds::DEFAULT_ENDPOINT),
        )?;
        let imds_token_ttl_secs = self.imds_token_ttl_secs.unwrap_or(21600);
        if !(1..=21600).contains(&imds_token_ttl_secs) {
            return Err(invalid("imds_token_ttl_secs must be 1 to 21600"));
        }
        let state_dir = self.state_dir.unwrap_or_else(|| "/run/hotplug-hook".into());
        // udev, the worker unit and a shell run in different directories:
        // a relative state dir would be a different directory for each.
        if !state_dir.is_absolute() {
            return Err(invalid(format!(
                "state_dir must be an absolute path, not {}",
                quote(&state_dir.to_string_lossy())
            )));
        }
        Ok(Config {
            invocation: Vec::new(),
            sysfs_root: self.sysfs_root.unwrap_or_else(|| "/sys".into()),
            state_dir,
            settle_ms: self.settle_ms.unwrap_or(300),
            poll_ms,
            return_window_secs: self.return_window_secs.unwrap_or(300),
            handle_virtual: self.handle_virtual.unwrap_or(false),
            backend,
            cloud_init_fifo: self
                .cloud_init_fifo
                .unwrap_or_else(|| "/run/cloud-init/share/hook-hotplug-cmd".into()),
            cloud_init_result: self
                .cloud_init_result
                .unwrap_or_else(|| "/run/cloud-init/result.json".into()),
            cloud_init_forward_remove: self.cloud_init_forward_remove.unwrap_or(false),
            command: self.command,
            command_timeout_secs: self.command_timeout_secs.unwrap_or(120),
            dispatch: self.dispatch.unwrap_or(Dispatch::Auto),
            worker_unit,
            systemd_dir: self
                .systemd_dir
                .unwrap_or_else(|| "/run/systemd/system".into()),
            journal_max_bytes: self.journal_max_bytes.unwrap_or(1 << 20),
            imds: self.imds.unwrap_or(true),
            imds_endpoint,
            imds_token_ttl_secs,
            imds_v1_fallback: self.imds_v1_fallback.unwrap_or(false),
            imds_connect_timeout_ms: self.imds_connect_timeout_ms.unwrap_or(250),
            imds_read_timeout_ms: self.imds_read_timeout_ms.unwrap_or(1000),
            imds_deadline_ms: self.imds_deadline_ms.unwrap_or(3000),
            imds_retries: self.imds_retries.unwrap_or(3).min(10),
            imds_listing_ttl_ms: self.imds_listing_ttl_ms.unwrap_or(2000),
            imds_confirm_timeout_secs: self.imds_confirm_timeout_secs.unwrap_or(120),
            log: self.log.unwrap_or(LogMode::Auto),
            journal_socket: self
                .journal_socket
                .unwrap_or_else(|| "/run/systemd/journal/socket".into()),
            syslog_socket: self.syslog_socket.unwrap_or_else(|| "/dev/log".into()),
            metrics_file: self.metrics_file.filter(|p| !p.as_os_str().is_empty()),
        })
    }
}

impl Config {
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

    /// Every setting as a config-file object: what a worker job carries, so
    /// the worker acts with the settings `handle` had.
    pub fn to_json(&self) -> Value {
        let backend = self.backend.as_str();
        let dispatch = match self.dispatch {
            Dispatch::Auto => "auto",
            Dispatch::Systemctl => "systemctl",
            Dispatch::SystemdRun => "systemd-run",
            Dispatch::Fork => "fork",
        };
        serde_json::json!({
            "sysfs_root": self.sysfs_root,
            "state_dir": self.state_dir,
            "settle_ms": self.settle_ms,
            "poll_ms": self.poll_ms,
            "return_window_secs": self.return_window_secs,
            "handle_virtual": self.handle_virtual,
            "backend": backend,
            "cloud_init_fifo": self.cloud_init_fifo,
            "cloud_init_result": self.cloud_init_result,
            "cloud_init_forward_remove": self.cloud_init_forward_remove,
            "command": self.command,
            "command_timeout_secs": self.command_timeout_secs,
            "dispatch": dispatch,
            "worker_unit": self.worker_unit,
            "systemd_dir": self.systemd_dir,
            "journal_max_bytes": self.journal_max_bytes,
            "imds": self.imds,
            "imds_endpoint": self.imds_endpoint,
            "imds_token_ttl_secs": self.imds_token_ttl_secs,
            "imds_v1_fallback": self.imds_v1_fallback,
            "imds_connect_timeout_ms": self.imds_connect_timeout_ms,
            "imds_read_timeout_ms": self.imds_read_timeout_ms,
            "imds_deadline_ms": self.imds_deadline_ms,
            "imds_retries": self.imds_retries,
            "imds_listing_ttl_ms": self.imds_listing_ttl_ms,
            "imds_confirm_timeout_secs": self.imds_confirm_timeout_secs,
            "log": self.log.to_possible_value().map(|v| v.get_name().to_string()),
            "journal_socket": self.journal_socket,
            "syslog_socket": self.syslog_socket,
            "metrics_file": self.metrics_file,
        })
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

fn wrong(key: &str, want: &str) -> anyhow::Error {
    invalid(format!("{} must be {want}", quote(key)))
}

fn str_of<'a>(key: &str, v: &'a Value) -> Result<&'a str> {
    v.as_str().ok_or_else(|| wrong(key, "a string"))
}

fn u64_of(key: &str, v: &Value) -> Result<u64> {
    v.as_u64()
        .ok_or_else(|| wrong(key, "a non-negative integer"))
}

fn bool_of(key: &str, v: &Value) -> Result<bool> {
    v.as_bool().ok_or_else(|| wrong(key, "true or false"))
}

fn enum_of<T: ValueEnum>(key: &str, v: &Value) -> Result<T> {
    let s = str_of(key, v)?;
    T::from_str(s, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|x| x.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        wrong(key, &format!("one of {}", names.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_parse() {
        let s = Settings::from_json(
            r#"{"settle_ms": 50, "backend": "command", "command": ["/bin/true", "x"],
                "handle_virtual": true, "state_dir": "/tmp/s", "dispatch": "systemd-run"}"#,
        )
        .unwrap();
        let c = s.resolve().unwrap();
        assert_eq!(c.settle_ms, 50);
        assert_eq!(c.backend, Backend::Command);
        assert_eq!(c.command, vec!["/bin/true", "x"]);
        assert!(c.handle_virtual);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.dispatch, Dispatch::SystemdRun);
    }

    #[test]
    fn bad_configs_are_usage_errors() {
        assert!(
            Settings::from_json(" \n").is_ok(),
            "an empty file sets nothing"
        );
        for bad in [
            "[]",
            "{",
            r#"{"setle_ms": 5}"#,
            r#"{"settle_ms": -1}"#,
            r#"{"settle_ms": "5"}"#,
            r#"{"backend": "ansible"}"#,
            r#"{"state_dir": 5}"#,
            r#"{"command": "/bin/true"}"#,
            r#"{"backend": "command"}"#,
            r#"{"poll_ms": 0}"#,
            r#"{"worker_unit": "a b"}"#,
        ] {
            let err = Settings::from_json(bad)
                .and_then(Settings::resolve)
                .unwrap_err();
            assert_eq!(
                crate::error::exit_code(&err),
                crate::error::ExitCode::Usage,
                "{bad}: {err:#}"
            );
        }
    }

    #[test]
    fn flags_override_the_file() {
        let file = Settings::from_json(r#"{"settle_ms": 50, "poll_ms": 5}"#).unwrap();
        let flags = Settings {
            settle_ms: Some(7),
            ..Settings::default()
        };
        let c = file.overlay(flags).resolve().unwrap();
        assert_eq!((c.settle_ms, c.poll_ms), (7, 5));
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = Settings::from_json(
            r#"{"backend": "cloud-init", "imds_endpoint": "ipv6", "dispatch": "fork",
                "command": ["/bin/x"], "settle_ms": 9, "imds_retries": 1}"#,
        )
        .and_then(Settings::resolve)
        .unwrap();
        let again = Settings::from_json(&c.to_json().to_string())
            .and_then(Settings::resolve)
            .unwrap();
        assert_eq!(format!("{c:?}"), format!("{again:?}"));
        assert_eq!(again.imds_endpoint, "http://[fd00:ec2::254]");
    }

    #[test]
    fn defaults() {
        let c = Settings::default().resolve().unwrap();
        assert_eq!(c.sysfs_root, PathBuf::from("/sys"));
        assert_eq!(c.state_dir, PathBuf::from("/run/hotplug-hook"));
        assert_eq!(c.backend, Backend::None);
        assert_eq!(
            c.cloud_init_fifo,
            PathBuf::from("/run/cloud-init/share/hook-hotplug-cmd")
        );
        assert!(!c.cloud_init_forward_remove);
        assert!(c.imds);
        assert_eq!(c.imds_endpoint, "http://169.254.169.254");
        assert_eq!(c.log, LogMode::Auto);
        assert_eq!(c.metrics_file, None, "metrics are off unless configured");
    }
}
