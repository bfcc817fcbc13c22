//! The command line (clap definitions only); `cmd` runs what it asks for.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgMatches, Args, Command, FromArgMatches, Parser, Subcommand};

use crate::config::{SETTINGS, Setting, Settings};
use crate::event::Overrides;

/// Tells a real NIC removal from a driver reload, unbind or netns move, and
/// reconfigures only for real changes.
#[derive(Debug, Parser)]
#[command(
    name = "hotplug-hook",
    version,
    about,
    max_term_width = 100,
    args_override_self = true,
    mut_subcommands = with_settings,
    after_help = "Settings go before or after the command; `hotplug-hook <command> --help` \
                  lists the ones it uses. Each is also a config-file key (`-` → `_`)."
)]
pub struct Cli {
    /// JSON config file [default: /etc/hotplug-hook/config.json if present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More detail on stderr
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Every setting given, before the subcommand or after it (see the
    /// `FromArgMatches` impl below). Must come before `command`, which
    /// takes the subcommand's matches away.
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Gives a subcommand every setting, listing in its help only the ones it
/// uses ([`crate::config::Setting::used_by`]) and accepting the others
/// hidden, as when they were global: a setting works before or after any
/// subcommand, and `handle` passes any of them on to its worker. Deferred:
/// only the subcommand that runs is given them.
fn with_settings(sub: Command) -> Command {
    sub.defer(|sub| {
        let name = sub.get_name().to_string();
        let shown = |s: &Setting| s.used_by(&name);
        sub.args(setting_args(shown))
            // `imds get`: its parent's settings.
            .mut_subcommands(|get| get.args(setting_args(shown)))
    })
}

/// Every setting's argument, listed in help where `shown` says.
fn setting_args(shown: impl Fn(&Setting) -> bool) -> Vec<clap::Arg> {
    SETTINGS.iter().map(|s| s.arg(shown(s))).collect()
}

/// Before the subcommand: every setting, listed in the top-level help.
impl Args for Settings {
    fn augment_args(cmd: Command) -> Command {
        cmd.args(setting_args(|_| true))
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Settings {
    /// The settings given before the subcommand, overlaid by those given
    /// after it (and after `imds get`): the last one given wins.
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut s = Settings::from_matches(m);
        let mut m = m;
        while let Some((_, sub)) = m.subcommand() {
            s = s.overlay(Settings::from_matches(sub));
            m = sub;
        }
        Ok(s)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = std::mem::take(self).overlay(Self::from_arg_matches(m)?);
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Handle one net event (udev RUN mode; flags override the udev environment)
    #[command(
        after_help = "Settings its worker uses (--imds-*...) are accepted too, and passed on to it."
    )]
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
    /// Forward NIC events that were missed: present NICs never configured,
    /// recorded NICs gone and no longer in IMDS; resume stranded jobs
    Reconcile {
        /// Print the plan, change nothing
        #[arg(long)]
        dry_run: bool,
    },
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

#[cfg(test)]
mod tests;
