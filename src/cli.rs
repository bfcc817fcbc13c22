//! Command-line interface and the subcommands' top-level flow.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::actions::{self, Taken};
use crate::config::{Config, Settings};
use crate::decision::{Decision, Outcome, Policy, Verdict, decide};
use crate::error::{EXIT_FAILURE, EXIT_OK, StateBusy, StateRefused, invalid};
use crate::event::{self, Action, Event, Overrides, Parsed};
use crate::evidence::{Evidence, ImdsEvidence, SettleWindow, classify};
use crate::imds::{Client, Fetched};
use crate::module::ModuleState;
use crate::state::{Record, State, Update, now_ms};
use crate::sysfs::Sysfs;
use crate::{log, worker};

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
    fn overrides(&self) -> Overrides {
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

/// Runs the parsed command line; returns the exit code for success paths.
pub fn run(cli: Cli) -> Result<i32> {
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
        Cmd::Handle(args) => handle(&cfg, args),
        Cmd::Classify { event, json } => classify_cmd(&cfg, event, *json),
        Cmd::Scan => scan(&cfg),
        Cmd::Status { entries, json } => status(&cfg, *entries, *json),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "hotplug-hook", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
        Cmd::Imds {
            command: ImdsCmd::Get { path },
        } => imds_get(&cfg, path),
        Cmd::Worker { job } => {
            let ok = worker::run(&cfg, job)?;
            Ok(if ok { EXIT_OK } else { EXIT_FAILURE })
        }
    }
}

fn policy(cfg: &Config) -> Policy {
    Policy {
        handle_virtual: cfg.handle_virtual,
        return_window_ms: cfg.return_window_secs.saturating_mul(1000),
    }
}

fn settle(cfg: &Config) -> SettleWindow {
    SettleWindow {
        window: Duration::from_millis(cfg.settle_ms),
        poll: Duration::from_millis(cfg.poll_ms),
    }
}

/// Reads and validates the event; `None` when it is not ours.
fn read_event(sysfs: &Sysfs, state: &State, args: &EventArgs) -> Result<Option<Event>> {
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
fn report(event: &Event, ev: &Evidence, d: &Decision, ms: f64) -> Value {
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

fn handle(cfg: &Config, args: &EventArgs) -> Result<i32> {
    let start = Instant::now();
    let sysfs = Sysfs::new(&cfg.sysfs_root);
    let state = State::new(&cfg.state_dir);
    let Some(event) = read_event(&sysfs, &state, args)? else {
        return Ok(EXIT_OK);
    };
    let (ev, decision) = classify(&sysfs, &state, &event, &policy(cfg), settle(cfg))?;
    // A state dir we refuse (another user's, or writable by others): the
    // verdict is still logged, but nothing is written or forwarded.
    let refused = match state.ensure() {
        Err(e) if e.is::<StateRefused>() => Some(e),
        _ => None,
    };
    let taken = match refused {
        None => actions::reconfigure(cfg, &state, &event, &ev, &decision),
        Some(_) => None,
    };
    let ms = start.elapsed().as_secs_f64() * 1000.0;

    // State is best effort: a read-only or full state dir must not turn a
    // handled event into a failure; a refused or held one must be seen.
    let failed = match refused {
        Some(e) => Some(e),
        None => match remember(cfg, &state, &event, &ev, &decision, taken.as_ref(), ms) {
            Err(e) if e.is::<StateBusy>() => Some(e),
            Err(e) => {
                log::warn(&format!("{e:#}"));
                None
            }
            Ok(()) => None,
        },
    };
    let action_note = match (&taken, &failed) {
        (_, Some(e)) => format!("; not recorded: {e:#}"),
        (Some(t), None) => format!("; {} {}: {}", t.backend, t.result, t.detail),
        (None, None) => String::new(),
    };
    let duration = format!("{ms:.3}");
    let seqnum = event.seqnum.map(|s| s.to_string()).unwrap_or_default();
    log::event(
        log::Priority::Info,
        &format!(
            "{} {}: {} ({}) in {ms:.1} ms{action_note}",
            event.iface,
            event.action.as_str(),
            decision.verdict.as_str(),
            decision.reasons.last().map_or("", String::as_str),
        ),
        &[
            ("INTERFACE", &event.iface),
            ("ACTION", event.action.as_str()),
            ("VERDICT", decision.verdict.as_str()),
            ("MAC", ev.mac().unwrap_or("")),
            ("DEVPATH", ev.devpath.as_deref().unwrap_or("")),
            ("SEQNUM", &seqnum),
            ("DURATION_MS", &duration),
        ],
    );
    match failed {
        Some(e) => Err(e),
        None => Ok(EXIT_OK),
    }
}

/// Updates the interface records and appends the journal entry, under the lock.
fn remember(
    cfg: &Config,
    state: &State,
    event: &Event,
    ev: &Evidence,
    decision: &Decision,
    taken: Option<&Taken>,
    ms: f64,
) -> Result<()> {
    state.ensure()?;
    let lock = state.lock()?;
    let v = decision.verdict;
    let result = state.apply(&lock, &update_for(event, ev, v));
    let mut entry = report(event, ev, decision, ms);
    entry["kind"] = json!("event");
    entry["ts_ms"] = json!(now_ms());
    entry["action_taken"] = taken.map_or(Value::Null, Taken::to_json);
    if let Err(e) = &result {
        entry["state_error"] = json!(format!("{e:#}"));
    }
    state.append_journal(&lock, &entry, cfg.journal_max_bytes)?;
    crate::metrics::update_locked(state, &lock, cfg.metrics_file.as_deref(), |m| {
        m.event(event.action.as_str(), v.as_str(), ms / 1000.0);
        if let Some(t) = taken {
            m.reconfiguration(t.backend, t.result);
        }
    })?;
    result
}

/// The record change an event's verdict calls for, made by [`State::apply`].
fn update_for(event: &Event, ev: &Evidence, v: Verdict) -> Update {
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
fn record_from(ev: &Evidence) -> Option<Record> {
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
        devpath: n.devpath.clone(),
        ifindex: n.ifindex,
        seen_ms: now_ms(),
        departed: None,
    })
}

fn classify_cmd(cfg: &Config, args: &EventArgs, as_json: bool) -> Result<i32> {
    let start = Instant::now();
    let sysfs = Sysfs::new(&cfg.sysfs_root);
    let state = State::new(&cfg.state_dir);
    let Some(event) = read_event(&sysfs, &state, args)? else {
        println!("ignored: not a net add/remove/move event");
        return Ok(EXIT_OK);
    };
    let (mut ev, mut decision) = classify(&sysfs, &state, &event, &policy(cfg), settle(cfg))?;
    if cfg.imds {
        ask_imds(cfg, &state, &mut ev, &mut decision);
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if as_json {
        let mut out = report(&event, &ev, &decision, ms);
        out["evidence"] = ev.facts_json();
        out["imds"] = ev.imds.as_ref().map_or(Value::Null, ImdsEvidence::to_json);
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(EXIT_OK);
    }
    let mut text = format!(
        "{} {}: {}{}\n",
        event.iface,
        event.action.as_str(),
        decision.verdict.as_str(),
        if decision.verdict.triggers_reconfig() {
            " (would reconfigure)"
        } else {
            " (no reconfiguration)"
        }
    );
    text.push_str("reasons:\n");
    for r in &decision.reasons {
        text.push_str(&format!("  - {r}\n"));
    }
    text.push_str("evidence:\n");
    let width = ev.facts.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let vwidth = ev.facts.iter().map(|f| f.value.len()).max().unwrap_or(0);
    for f in &ev.facts {
        text.push_str(&format!(
            "  {:width$}  {:vwidth$}  {}\n",
            f.name, f.value, f.source
        ));
    }
    if let Some(imds) = &ev.imds {
        text.push_str(&format!("imds ({}):\n", imds.mac));
        for r in &imds.requests {
            let outcome = match (r.cached, r.status, &r.error) {
                (true, _, _) => "cached".to_string(),
                (_, Some(s), _) => format!("{s} in {:.1} ms", r.latency_ms),
                (_, None, Some(e)) => format!("{e} after {:.1} ms", r.latency_ms),
                _ => String::new(),
            };
            text.push_str(&format!("  {} {}  {outcome}\n", r.method, r.path));
        }
    }
    text.push_str(&format!("decided in {ms:.2} ms\n"));
    print!("{text}");
    Ok(EXIT_OK)
}

/// Adds IMDS evidence where it can change or qualify the verdict
/// (`classify` only: `handle` never calls IMDS), and decides again.
fn ask_imds(cfg: &Config, state: &State, ev: &mut Evidence, decision: &mut Decision) {
    let tiebreak =
        decision.verdict == Verdict::DriverUnbind && ev.settle.as_ref().is_some_and(|s| s.expired);
    if !decision.verdict.triggers_reconfig() && !tiebreak {
        return;
    }
    let Some(mac) = ev.mac().map(str::to_string) else {
        return;
    };
    let mut client = Client::new(cfg.imds_settings(), Some(state.clone()));
    let presence = if decision.verdict == Verdict::NewDevice {
        client.attached(&mac)
    } else {
        client.detached(&mac)
    };
    client.flush_metrics(cfg.metrics_file.as_deref());
    ev.imds = Some(ImdsEvidence {
        mac,
        presence,
        requests: client.log.clone(),
    });
    if let Outcome::Decided(d) = decide(ev, &policy(cfg)) {
        *decision = d;
    }
}

fn imds_get(cfg: &Config, path: &str) -> Result<i32> {
    let path = crate::imds::metadata_path(path)?;
    let state = State::new(&cfg.state_dir);
    let mut client = Client::new(cfg.imds_settings(), Some(state));
    let result = if path == crate::imds::MACS_PATH {
        client
            .macs()
            .map(|macs| Fetched::Found(macs.iter().map(|m| format!("{m}/\n")).collect::<String>()))
    } else {
        client.get(&path)
    };
    client.flush_metrics(cfg.metrics_file.as_deref());
    for r in &client.log {
        log::debug(&format!(
            "{} {} {}",
            r.method,
            r.path,
            if r.cached {
                "cached".to_string()
            } else {
                r.status
                    .map_or_else(|| r.error.clone().unwrap_or_default(), |s| s.to_string())
            }
        ));
    }
    match result? {
        Fetched::Found(body) => {
            print!("{body}");
            if !body.ends_with('\n') {
                println!();
            }
            Ok(EXIT_OK)
        }
        Fetched::Absent => anyhow::bail!("{}{path}: not found (404)", cfg.imds_endpoint),
    }
}

fn status(cfg: &Config, entries: usize, as_json: bool) -> Result<i32> {
    let state = State::new(&cfg.state_dir);
    let m = crate::metrics::load(&state);
    let journal = state.journal_tail(entries);
    let pending = worker::pending(&state);
    let count = |held: Option<bool>| pending.iter().filter(|p| p.held == held).count();
    let (running, stranded, unknown) = (count(Some(true)), count(Some(false)), count(None));
    if as_json {
        let now = crate::clock::boot_ms();
        let out = json!({
            "state_dir": cfg.state_dir,
            "metrics": m.to_json(),
            "jobs": {
                "pending": pending.len(),
                "running": running,
                "stranded": stranded,
                "unknown": unknown,
                "list": pending.iter().map(|p| p.to_json(cfg, now)).collect::<Vec<_>>(),
            },
            "journal": journal,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(EXIT_OK);
    }
    let mut text = format!("state dir: {}\n", cfg.state_dir.display());
    text.push_str(&format!(
        "jobs pending: {}{}\n",
        pending.len(),
        if pending.is_empty() {
            String::new()
        } else {
            format!(
                " ({running} held by a running worker, {stranded} stranded{})",
                if unknown > 0 {
                    format!(", {unknown} unreadable")
                } else {
                    String::new()
                }
            )
        }
    ));
    for p in pending.iter().filter(|p| p.held != Some(true)) {
        let what = p.job.as_ref().map_or_else(
            || p.error.clone().unwrap_or_default(),
            |j| format!("{} {}: {}", j.iface, j.action.as_str(), j.verdict.as_str()),
        );
        let state = if p.held.is_some() {
            "stranded"
        } else {
            "unreadable"
        };
        text.push_str(&format!("  {state} {}: {what}\n", p.id));
    }
    if m.stranded_jobs + m.resumed_jobs > 0 {
        text.push_str(&format!(
            "stranded jobs: {} resumed, {} past their deadline (reported, not run)\n",
            m.resumed_jobs, m.stranded_jobs
        ));
    }
    let list = |text: &mut String, title: &str, map: &std::collections::BTreeMap<String, u64>| {
        text.push_str(&format!(
            "{title}:{}\n",
            if map.is_empty() { " none" } else { "" }
        ));
        for (k, v) in map {
            text.push_str(&format!("  {v:>6}  {k}\n"));
        }
    };
    list(&mut text, "events (action verdict)", &m.events);
    if m.decision_count > 0 {
        text.push_str(&format!(
            "decision time: {:.2} ms mean over {} events\n",
            m.decision_seconds_sum * 1000.0 / m.decision_count as f64,
            m.decision_count
        ));
    }
    list(
        &mut text,
        "reconfigurations (backend result)",
        &m.reconfigurations,
    );
    list(&mut text, "worker IMDS confirmations", &m.worker_runs);
    list(&mut text, "IMDS requests (kind status)", &m.imds.requests);
    if m.imds.latency_count > 0 {
        text.push_str(&format!(
            "IMDS latency: {:.1} ms mean over {} requests; {} retries, {} token fetches\n",
            m.imds.latency_ms_sum / m.imds.latency_count as f64,
            m.imds.latency_count,
            m.imds.retries,
            m.imds.token_fetches
        ));
    }
    list(&mut text, "IMDS cache hits", &m.imds.cache_hits);
    text.push_str(&format!("last {} journal entries:\n", journal.len()));
    for e in &journal {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        text.push_str(&format!(
            "  {} {} {} {}: {}{}{}\n",
            e["ts_ms"].as_u64().unwrap_or(0),
            s("kind"),
            s("iface"),
            s("action"),
            s("verdict"),
            e["action_taken"]["result"]
                .as_str()
                .map(|r| format!(
                    " ({} {r})",
                    e["action_taken"]["backend"].as_str().unwrap_or("")
                ))
                .unwrap_or_default(),
            match e["result"].as_str() {
                Some(r @ ("stranded" | "cancelled")) => format!(" [job {} {r}]", s("job")),
                _ if e["resumed"] == true => format!(" [job {} resumed]", s("job")),
                _ => String::new(),
            }
        ));
    }
    print!("{text}");
    Ok(EXIT_OK)
}

fn scan(cfg: &Config) -> Result<i32> {
    let sysfs = Sysfs::new(&cfg.sysfs_root);
    let state = State::new(&cfg.state_dir);
    state.ensure()?;
    let mut recorded = Vec::new();
    for iface in sysfs.list_interfaces()? {
        let Some(devpath) = sysfs.class_net_devpath(&iface)? else {
            continue;
        };
        if event::is_virtual(&devpath) && !cfg.handle_virtual {
            continue;
        }
        let event = Event {
            action: Action::Add,
            iface: iface.clone(),
            devpath: Some(devpath),
            ifindex: None,
            driver: None,
            seqnum: None,
            iface_old: None,
            from_udev: false,
        };
        let ev = crate::evidence::Gatherer::new(&sysfs, &state, &event)?.snapshot()?;
        if ev.netdev.is_some() {
            let lock = state.lock()?;
            state.apply(&lock, &update_for(&event, &ev, Verdict::AlreadyKnown))?;
            recorded.push(iface);
        }
    }
    println!(
        "recorded {} interface{}{}{}",
        recorded.len(),
        if recorded.len() == 1 { "" } else { "s" },
        if recorded.is_empty() { "" } else { ": " },
        recorded.join(", ")
    );
    // Jobs whose worker died: resumed by new workers, or reported.
    let swept = worker::sweep(cfg, worker::Sweep::Dispatch);
    if swept.resumed + swept.stranded > 0 {
        println!(
            "stranded jobs: {} resumed, {} past their deadline (reported, not run)",
            swept.resumed, swept.stranded
        );
    }
    Ok(EXIT_OK)
}
