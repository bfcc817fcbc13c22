use super::*;
use crate::config::SETTINGS;
use clap::CommandFactory;

fn args(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

#[test]
fn invoked_as_hook_hotplug_is_a_cloud_init_handle() {
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
    Cli::command().debug_assert();
}

/// A setting works before or after the subcommand (and `imds get`), as when
/// settings were global; the last one given wins.
#[test]
fn settings_work_before_and_after_the_subcommand() {
    let parse = |v: &[&str]| Cli::try_parse_from(args(v)).map(|c| c.settings);
    let s = parse(&["hh", "--state-dir", "/a", "--settle-ms", "1", "handle"]).unwrap();
    assert_eq!((s.state_dir.unwrap(), s.settle_ms), ("/a".into(), Some(1)));
    let s = parse(&["hh", "--state-dir", "/a", "handle", "--state-dir", "/b"]).unwrap();
    assert_eq!(s.state_dir.unwrap(), PathBuf::from("/b"));
    let s = parse(&[
        "hh",
        "imds",
        "--state-dir",
        "/c",
        "get",
        "--state-dir",
        "/d",
        "x",
    ])
    .unwrap();
    assert_eq!(s.state_dir.unwrap(), PathBuf::from("/d"));
    let s = parse(&["hh", "status", "--state-dir", "/a", "--state-dir", "/b"]).unwrap();
    assert_eq!(s.state_dir.unwrap(), PathBuf::from("/b"));
    // Not listed in status's help, but accepted there as before.
    let s = parse(&["hh", "status", "--settle-ms", "5", "-n", "1"]).unwrap();
    assert_eq!(s.settle_ms, Some(5));
    // How a worker is started: the hook's settings before `worker`.
    let s = parse(&["hh", "--imds-retries", "2", "worker", "--job", "/j"]).unwrap();
    assert_eq!(s.imds_retries, Some(2));
    let s = parse(&[
        "hh",
        "--command",
        "a",
        "handle",
        "--command",
        "b",
        "--command",
        "c",
    ])
    .unwrap();
    assert_eq!(
        s.command.unwrap(),
        ["b", "c"],
        "after the subcommand, a new argv"
    );
    assert!(parse(&["hh", "status", "--settle-ms", "x"]).is_err());
}

fn built() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

/// Each subcommand's help lists the settings it uses, and only those; all
/// of them are listed before the subcommand.
#[test]
fn subcommand_help_lists_the_settings_it_uses() {
    fn visible(cmd: &clap::Command) -> Vec<&str> {
        cmd.get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long())
            .collect()
    }
    let cli = built();
    let top = visible(&cli);
    for s in SETTINGS {
        assert!(
            top.contains(&s.flag),
            "--{} not in the top-level help",
            s.flag
        );
    }
    let mut seen = 0;
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_name();
        let mut cmds = vec![sub];
        cmds.extend(sub.get_subcommands().filter(|s| s.get_name() != "help"));
        for cmd in cmds {
            let shown = visible(cmd);
            for s in SETTINGS {
                assert_eq!(
                    shown.contains(&s.flag),
                    s.used_by(name),
                    "{name} --{}",
                    s.flag
                );
                assert!(cmd.get_arguments().any(|a| a.get_long() == Some(s.flag)));
            }
            seen += 1;
        }
    }
    assert!(seen >= 8, "{seen} subcommands");
    let help = |sub: &str| {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.find_subcommand_mut(sub)
            .unwrap()
            .render_long_help()
            .to_string()
    };
    let status = help("status");
    for absent in [
        "--settle-ms",
        "--command",
        "--imds-endpoint",
        "--sysfs-root",
        "--backend",
    ] {
        assert!(
            !status.contains(absent),
            "status --help lists {absent}:\n{status}"
        );
    }
    assert!(status.contains("--state-dir"));
    let handle = help("handle");
    for present in [
        "--iface",
        "--devpath",
        "--settle-ms",
        "--backend",
        "--state-dir",
        "--imds",
    ] {
        assert!(handle.contains(present), "handle --help lacks {present}");
    }
    assert!(!handle.contains("--imds-endpoint"));
    let worker = help("worker");
    assert!(worker.contains("--imds-endpoint") && worker.contains("--command"));
    assert!(!worker.contains("--settle-ms"));
}

/// The table names only real subcommands, and every setting has a user.
#[test]
fn settings_name_real_subcommands() {
    let cli = Cli::command();
    let subs: Vec<&str> = cli.get_subcommands().map(|s| s.get_name()).collect();
    for s in SETTINGS {
        assert!(!s.uses.is_empty(), "{}", s.key);
        for u in s.uses {
            assert!(
                *u == "all" || subs.contains(u),
                "{}: no subcommand {u}",
                s.key
            );
        }
    }
}
