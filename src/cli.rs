//! The command line (clap definitions only); `cmd` runs what it asks for.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;
use crate::event::Overrides;

/// Tells a real NIC removal from a driver reload, unbind or netns move, and
/// reconfigures only for real changes.
#[derive(Debug, Parser)]
#[command(
    name = "hotplug-hook",
    version,
    about,
    max_term_width = 100,
    args_override_self = true
)]
pub struct Cli {
    /// JSON config file [default: /etc/hotplug-hook/config.json if present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More detail on stderr
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Handle one net event (udev RUN mode; flags override the udev environment)
    Handle(EventArgs),
    /// Classify an event without side effects and show the evidence
    Classify {
        #[command(flatten)]
        event: EventArgs,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Record every present interface (run at boot, before events arrive)
    Scan,
    /// Instance metadata, through the same cached, counted client
    Imds {
        #[command(subcommand)]
        command: ImdsCmd,
    },
    /// Show the counters and the last journal entries
    Status {
        /// How many journal entries
        #[arg(short = 'n', long, default_value_t = 10)]
        entries: usize,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script
    Completions {
        /// bash, zsh, fish, elvish or powershell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run one reconfiguration job outside udev (started by hotplug-hook-worker@.service)
    Worker {
        /// The job file written by `handle`
        #[arg(long, value_name = "FILE")]
        job: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoked_as_hook_hotplug_is_a_cloud_init_handle() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            effective_args(args(&["/usr/lib/cloud-init/hook-hotplug"])),
            args(&[
                "/usr/lib/cloud-init/hook-hotplug",
                "--backend",
                "cloud-init",
                "handle"
            ])
        );
        assert_eq!(
            effective_args(args(&["hook-hotplug", "-v"])),
            args(&["hook-hotplug", "--backend", "cloud-init", "-v", "handle"])
        );
        let plain = args(&["/usr/libexec/hotplug-hook", "scan"]);
        assert_eq!(effective_args(plain.clone()), plain);
    }

    /// What `handle` passes a worker gives it the same settings.
    #[test]
    fn settings_round_trip_through_worker_args() {
        let argv = [
            "hotplug-hook",
            "--state-dir",
            "/s",
            "--command",
            "/bin/x",
            "--command",
            "two words",
            "--handle-virtual",
            "--imds=false",
            "--backend",
            "cloud-init",
            "--dispatch",
            "systemd-run",
            "--settle-ms",
            "7",
            "--log",
            "journal",
            "--metrics-file",
            "/m.prom",
            "scan",
        ];
        let cli = Cli::parse_from(argv);
        let mut again: Vec<OsString> = vec!["hotplug-hook".into()];
        again.extend(cli.settings.to_args());
        again.push("scan".into());
        let back = Cli::parse_from(again);
        assert_eq!(
            format!("{:?}", back.settings),
            format!("{:?}", cli.settings)
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

#[derive(Debug, Subcommand)]
pub enum ImdsCmd {
    /// Print a metadata path, e.g. `meta-data/network/interfaces/macs/`
    Get {
        /// Relative to /latest/ (a leading /latest/ is accepted)
        path: String,
    },
}

/// The event, when not (or not only) from the udev environment.
#[derive(Debug, Clone, Default, Args)]
pub struct EventArgs {
    /// Interface name (udev: INTERFACE)
    #[arg(long, value_name = "NAME")]
    pub iface: Option<String>,
    /// Event action (udev: ACTION); by hand, inferred from the present state
    #[arg(long, value_parser = ["add", "remove", "move"])]
    pub action: Option<String>,
    /// Device path under /sys, e.g. /devices/pci0000:00/0000:00:05.0/net/ens5 (udev: DEVPATH)
    #[arg(long, value_name = "PATH")]
    pub devpath: Option<String>,
    /// Driver name (udev: ID_NET_DRIVER)
    #[arg(long, value_name = "NAME")]
    pub driver: Option<String>,
    /// Interface index of the device the event is about (udev: IFINDEX)
    #[arg(long, value_name = "N")]
    pub ifindex: Option<String>,
}

impl EventArgs {
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            iface: self.iface.clone(),
            action: self.action.clone(),
            devpath: self.devpath.clone(),
            driver: self.driver.clone(),
            ifindex: self.ifindex.clone(),
        }
    }
}

/// The name cloud-init's udev rule runs (`/usr/lib/cloud-init/hook-hotplug`).
/// Installed under that name (dpkg-divert + symlink), hotplug-hook acts as a
/// filtering drop-in: `handle` with the cloud-init backend.
pub const CLOUD_INIT_HOOK_NAME: &str = "hook-hotplug";

/// The command line to parse: as given, or, when invoked as
/// `hook-hotplug`, `--backend cloud-init <args> handle`.
pub fn effective_args(argv: Vec<OsString>) -> Vec<OsString> {
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_os_string());
    if invoked_as.as_deref() != Some(std::ffi::OsStr::new(CLOUD_INIT_HOOK_NAME)) {
        return argv;
    }
    let mut out = vec![argv[0].clone(), "--backend".into(), "cloud-init".into()];
    out.extend(argv.into_iter().skip(1));
    out.push("handle".into());
    out
}
