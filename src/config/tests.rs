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

/// Errors name the key and what it must be, as they always have.
#[test]
fn config_errors_name_the_key() {
    let err = |text: &str| format!("{:#}", Settings::from_json(text).unwrap_err());
    assert_eq!(err(r#"{"setle_ms": 5}"#), r#"unknown key "setle_ms""#);
    assert_eq!(
        err(r#"{"settle_ms": "5"}"#),
        r#""settle_ms" must be a non-negative integer"#
    );
    assert_eq!(
        err(r#"{"backend": "ansible"}"#),
        r#""backend" must be one of none, cloud-init, command, ec2-net-utils"#
    );
    assert_eq!(err(r#"{"imds": 1}"#), r#""imds" must be true or false"#);
    assert_eq!(
        err(r#"{"state_dir": 5}"#),
        r#""state_dir" must be a string"#
    );
    assert_eq!(
        err(r#"{"command": "/bin/true"}"#),
        r#""command" must be an array of strings"#
    );
    assert_eq!(
        err(r#"{"imds_retries": 5000000000}"#),
        r#""imds_retries" must be a small integer"#
    );
}

/// Every setting, by the table: a config key, a flag of the same name, in
/// the JSON form, and back through flags and JSON unchanged.
#[test]
fn every_setting_round_trips() {
    let c = Settings::default().resolve().unwrap();
    let json = c.to_json();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut table: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
    table.sort();
    assert_eq!(keys, table);
    for s in SETTINGS {
        assert_eq!(s.flag, s.key.replace('_', "-"));
        assert!(
            !s.doc.is_empty() && !s.doc.contains("[default"),
            "{}",
            s.key
        );
    }
    // Every key set (to its default) in a file, and given as flags, resolves
    // to the same settings.
    let all = Settings::from_json(&json.to_string()).unwrap();
    let mut argv: Vec<std::ffi::OsString> = vec!["hotplug-hook".into()];
    argv.extend(all.to_args());
    argv.push("scan".into());
    let flags = <crate::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
    let again = flags.settings.resolve().unwrap();
    assert_eq!(format!("{again:?}"), format!("{c:?}"));
}

#[test]
fn metrics_file_off_by_null_or_empty() {
    for text in [r#"{"metrics_file": null}"#, r#"{"metrics_file": ""}"#] {
        let c = Settings::from_json(text)
            .and_then(Settings::resolve)
            .unwrap();
        assert_eq!(c.metrics_file, None, "{text}");
    }
    let on = Settings::from_json(r#"{"metrics_file": "/m.prom"}"#).unwrap();
    let off = Settings {
        metrics_file: Some(None),
        ..Settings::default()
    };
    assert_eq!(off.to_args(), ["--metrics-file="]);
    let cli =
        <crate::cli::Cli as clap::Parser>::try_parse_from(["hh", "--metrics-file=", "status"])
            .unwrap();
    let c = on.overlay(cli.settings).resolve().unwrap();
    assert_eq!(c.metrics_file, None, "an empty flag turns the file's off");
}
