//! The subcommands, one flow per file, and what they share: the event as
//! read from udev or flags, the policy and settle window from the settings,
//! the report every verdict is logged with, and the record change it makes.

mod classify;
mod handle;
mod imds;
mod reconcile;
mod scan;
mod status;
mod worker;

use std::ffi::OsString;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::cli::{Cli, Cmd, EventArgs, ImdsCmd};
use crate::config::{Config, Settings};
use crate::decision::{Decision, Policy, Verdict};
use crate::error::ExitCode;
use crate::error::invalid;
use crate::event::{self, Action, Event, Parsed};
use crate::evidence::Evidence;
use crate::host::module::ModuleState;
use crate::host::sysfs::Sysfs;
use crate::log;
use crate::settle::SettleWindow;
use crate::state::{Record, State, Update, now_ms};

/// Runs the parsed command line; returns the exit code for success paths.
pub fn run(cli: Cli) -> Result<ExitCode> {
    log::set_verbosity(cli.verbose);
    // Logging first, from the defaults and the flags: under udev stderr goes
    // nowhere, and a configuration file that cannot be loaded (exit 2) must
    // still reach the journal or syslog.
    let early = Settings {
        log: cli.settings.log,
        journal_socket: cli.settings.journal_socket.clone(),
        syslog_socket: cli.settings.syslog_socket.clone(),
        ..Settings::default()
    }
    .resolve()?;
    log::init(early.log, &early.journal_socket, &early.syslog_socket);
    let cfg = Config::load(cli.config.as_deref(), cli.settings)?;
    log::init(cfg.log, &cfg.journal_socket, &cfg.syslog_socket);
    match &cli.command {
        Cmd::Handle(args) => handle::run(&cfg, args),
        Cmd::Classify { event, json } => classify::run(&cfg, event, *json),
        Cmd::Scan => scan::run(&cfg),
        Cmd::Reconcile { dry_run } => reconcile::run(&cfg, *dry_run),
        Cmd::Status { entries, json } => status::run(&cfg, *entries, *json),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "hotplug-hook", &mut std::io::stdout());
            Ok(ExitCode::Ok)
        }
        Cmd::Imds {
            command: ImdsCmd::Get { path },
        } => imds::get(&cfg, path),
        Cmd::Worker { job } => {
            let ok = worker::run(&cfg, job)?;
            Ok(if ok { ExitCode::Ok } else { ExitCode::Failure })
        }
    }
}

pub(crate) fn policy(cfg: &Config) -> Policy {
    Policy {
        handle_virtual: cfg.handle_virtual,
        return_window_ms: cfg.return_window_secs.saturating_mul(1000),
        scope: cfg.scope(),
        cloud: cfg.cloud,
    }
}

pub(crate) fn settle(cfg: &Config) -> SettleWindow {
    SettleWindow {
        window: Duration::from_millis(cfg.settle_ms),
        poll: Duration::from_millis(cfg.poll_ms),
    }
}

/// Reads and validates the event; `None` when it is not ours.
pub(crate) fn read_event(sysfs: &Sysfs, state: &State, args: &EventArgs) -> Result<Option<Event>> {
    let env = |k: &str| -> Option<OsString> { std::env::var_os(k) };
    let mut infer = |iface: &str| -> Result<Action> {
        if sysfs.exists(&format!("/class/net/{iface}")) {
            Ok(Action::Add)
        } else if state.record_for(iface, None).is_some() {
            Ok(Action::Remove)
        } else {
            Err(invalid(format!(
                "{iface} is not in {} and has no record: pass --action and --devpath",
                sysfs.show("/class/net")
            )))
        }
    };
    match event::parse(&env, &args.overrides(), &mut infer)? {
        Parsed::Ignored(why) => {
            log::debug(&format!("ignored: {why}"));
            Ok(None)
        }
        Parsed::Event(e) => {
            if let Some(d) = &e.devpath {
                sysfs.check_devpath(d)?;
            }
            Ok(Some(e))
        }
    }
}

/// The verdict, reasons and timings: shared by `classify --json` and the journal.
pub(crate) fn report(event: &Event, ev: &Evidence, d: &Decision, ms: f64) -> Value {
    json!({
        "iface": event.iface,
        "action": event.action.as_str(),
        "devpath": ev.devpath,
        "seqnum": event.seqnum,
        "from_udev": event.from_udev,
        "mac": ev.mac(),
        "driver": ev.driver,
        "verdict": d.verdict.as_str(),
        "reconfigure": d.verdict.triggers_reconfig(),
        "reasons": d.reasons,
        "settle": ev.settle.as_ref().map(|s| json!({
            "elapsed_ms": s.elapsed_ms, "polls": s.polls, "expired": s.expired,
        })),
        "duration_ms": (ms * 1000.0).round() / 1000.0,
    })
}

/// The record change an event's verdict calls for, made by [`State::apply`].
pub(crate) fn update_for(event: &Event, ev: &Evidence, v: Verdict) -> Update {
    Update {
        action: event.action,
        verdict: v,
        iface: event.iface.clone(),
        old_iface: event.iface_old.clone(),
        devpath: ev.devpath.clone(),
        ifindex: event.ifindex,
        present: (event.action == Action::Add)
            .then(|| record_from(ev))
            .flatten(),
        prior: ev.record.clone(),
        driver: ev.driver.clone(),
        module: ev.module.as_ref().map(|m| m.name.clone()),
    }
}

/// A record of a present interface, from add-time evidence.
pub(crate) fn record_from(ev: &Evidence) -> Option<Record> {
    let n = ev.netdev.as_ref()?;
    Some(Record {
        name: n.name.clone(),
        mac: n.mac.clone(),
        driver: ev.driver.clone(),
        module: ev.module.as_ref().map(|m| m.name.clone()),
        builtin: ev
            .module
            .as_ref()
            .is_some_and(|m| m.state == ModuleState::Builtin),
        transport: ev.transport.as_ref().map(|m| m.name.clone()),
        transport_builtin: ev
            .transport
            .as_ref()
            .is_some_and(|m| m.state == ModuleState::Builtin),
        // Learnt by the worker from IMDS; kept while the MAC is the same.
        device_number: ev
            .record
            .as_ref()
            .filter(|r| r.mac.is_some() && r.mac == n.mac)
            .and_then(|r| r.device_number),
        devpath: n.devpath.clone(),
        ifindex: n.ifindex,
        seen_ms: now_ms(),
        departed: None,
    })
}

/// The NICs present now (virtual ones only when handled), as add-time
/// evidence: what `scan` records and `reconcile` compares.
pub(crate) fn present_nics(
    cfg: &Config,
    sysfs: &Sysfs,
    state: &State,
) -> Result<Vec<(Event, Evidence)>> {
    let mut out = Vec::new();
    for iface in sysfs.list_interfaces()? {
        let Some(devpath) = sysfs.class_net_devpath(&iface)? else {
            continue;
        };
        if event::is_virtual(&devpath) && !cfg.handle_virtual {
            continue;
        }
        let event = Event {
            action: Action::Add,
            iface,
            devpath: Some(devpath),
            ifindex: None,
            driver: None,
            seqnum: None,
            iface_old: None,
            from_udev: false,
        };
        let ev = crate::evidence::Gatherer::new(sysfs, state, &event)?.snapshot()?;
        if ev.netdev.is_some() {
            out.push((event, ev));
        }
    }
    Ok(out)
}
