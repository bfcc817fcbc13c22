//! Bad input: a clear one-line error, exit 2, and no state change.
//! Also `classify` (no side effects, JSON shape).

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;

use common::{ModKind, Tree, ok, stderr, stdout};

const ENS5: &str = "/devices/pci0000:00/0000:00:05.0/net/ens5";

fn nitro() -> Tree {
    let t = Tree::new();
    t.ena(5, "ens5", "02:00:00:00:00:05", 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    t
}

fn assert_refused(t: &Tree, out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(err.starts_with("hotplug-hook: "), "{err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    let _ = t;
}

#[test]
fn hostile_udev_environments_are_refused_without_touching_state() {
    let t = nitro();
    let before = t.state_snapshot();
    let long = "a".repeat(16);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("INTERFACE", "ens5/../x")], "invalid interface name"),
        (vec![("INTERFACE", "..")], "invalid interface name"),
        (vec![("INTERFACE", "ens\n5")], "invalid interface name"),
        (vec![("INTERFACE", &long)], "longer than 15 bytes"),
        (vec![("INTERFACE", "")], "empty"),
        (
            vec![
                ("INTERFACE", "ens5"),
                ("DEVPATH", "devices/pci0000:00/net/ens5"),
            ],
            "not under /devices/",
        ),
        (
            vec![
                ("INTERFACE", "ens5"),
                ("DEVPATH", "/devices/pci0000:00/../../../etc/net/ens5"),
            ],
            "contains a . or .. component",
        ),
        (
            vec![
                ("INTERFACE", "ens5"),
                ("DEVPATH", "/devices/pci0000:00/0000:00:05.0"),
            ],
            "not a net device",
        ),
        (
            vec![("INTERFACE", "ens6"), ("DEVPATH", ENS5)],
            "does not end in /net/ens6",
        ),
        (vec![("INTERFACE", "ens5"), ("IFINDEX", "two")], "IFINDEX"),
    ];
    for (vars, needle) in cases {
        let mut env = vec![("ACTION", "remove"), ("SUBSYSTEM", "net")];
        env.extend(vars);
        let out = t.run(&["handle"], &env);
        assert_refused(&t, &out, needle);
    }
    let out = t.run(&["handle"], &[("ACTION", "explode"), ("INTERFACE", "ens5")]);
    assert_refused(&t, &out, "unknown ACTION");
    let out = t.run(&["handle"], &[("ACTION", "remove"), ("SUBSYSTEM", "net")]);
    assert_refused(&t, &out, "no interface");
    assert_eq!(t.state_snapshot(), before, "state changed");
}

#[test]
fn non_utf8_interface_is_refused() {
    let t = nitro();
    let mut cmd: Command = t.command(&["handle"], &[("ACTION", "add"), ("SUBSYSTEM", "net")]);
    cmd.env("INTERFACE", OsString::from_vec(vec![b'e', b't', 0xff]));
    let out = cmd.output().unwrap();
    assert_refused(&t, &out, "INTERFACE is not valid UTF-8");
}

#[test]
fn devpaths_escaping_the_sysfs_root_are_refused() {
    let t = nitro();
    let before = t.state_snapshot();
    // A symlink inside the tree that leads out of it.
    std::os::unix::fs::symlink("/etc", t.p("/devices/escape")).unwrap();
    let out = t.run(
        &["handle"],
        &[
            ("ACTION", "remove"),
            ("DEVPATH", "/devices/escape/net/ens5"),
        ],
    );
    assert_refused(&t, &out, "outside the sysfs root");
    // A symlink loop.
    std::os::unix::fs::symlink("loop-b", t.p("/devices/loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", t.p("/devices/loop-b")).unwrap();
    let out = t.run(
        &["handle"],
        &[
            ("ACTION", "remove"),
            ("DEVPATH", "/devices/loop-a/net/ens5"),
        ],
    );
    assert_refused(&t, &out, "symlink loop");
    assert_eq!(t.state_snapshot(), before);
}

#[test]
fn bad_flags_and_configs_are_usage_errors() {
    let t = nitro();
    let out = t.run(&["handle", "--action", "explode", "--iface", "ens5"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = t.run(
        &[
            "--config",
            "/nonexistent/config.json",
            "handle",
            "--iface",
            "ens5",
        ],
        &[],
    );
    assert_refused(&t, &out, "failed to read config /nonexistent/config.json");
    let cfg = t.scratch("bad.json");
    std::fs::write(&cfg, r#"{"settle_ms": "fast"}"#).unwrap();
    let out = t.run(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "handle",
            "--iface",
            "ens5",
        ],
        &[],
    );
    assert_refused(&t, &out, "\"settle_ms\" must be a non-negative integer");
    std::fs::write(&cfg, r#"{"setle_ms": 5}"#).unwrap();
    let out = t.run(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "handle",
            "--iface",
            "ens5",
        ],
        &[],
    );
    assert_refused(&t, &out, "unknown key \"setle_ms\"");
}

#[test]
fn config_file_settings_apply_and_flags_win() {
    let t = nitro();
    t.unbind(ENS5);
    let cfg = t.scratch("c.json");
    std::fs::write(&cfg, r#"{"settle_ms": 5000}"#).unwrap();
    let start = std::time::Instant::now();
    ok(&t.udev(
        "remove",
        ENS5,
        2,
        "ena",
        &["--config", cfg.to_str().unwrap(), "--settle-ms", "20"],
    ));
    assert!(start.elapsed().as_millis() < 2000);
    assert_eq!(t.last_verdict(), "driver-unbind");
}

#[test]
fn classify_explains_without_side_effects() {
    let t = Tree::new();
    t.ena(5, "ens5", "02:00:00:00:00:05", 2, ModKind::Loadable);
    t.module_going("ena");
    t.unbind(ENS5);
    let out = t.run(
        &[
            "classify",
            "--action",
            "remove",
            "--devpath",
            ENS5,
            "--driver",
            "ena",
            "--ifindex",
            "2",
        ],
        &[],
    );
    ok(&out);
    let text = stdout(&out);
    assert!(
        text.starts_with("ens5 remove: driver-unload (no reconfiguration)\n"),
        "{text}"
    );
    assert!(text.contains("module ena is going"), "{text}");
    assert!(
        text.contains(&t.p("/module/ena/initstate").display().to_string()),
        "{text}"
    );
    assert!(!t.state.exists(), "classify wrote state");

    let out = t.run(
        &[
            "classify",
            "--json",
            "--action",
            "remove",
            "--devpath",
            ENS5,
            "--driver",
            "ena",
        ],
        &[],
    );
    ok(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["verdict"], "driver-unload");
    assert_eq!(v["reconfigure"], false);
    assert_eq!(v["iface"], "ens5");
    assert_eq!(v["action"], "remove");
    assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
    let evidence = v["evidence"].as_array().unwrap();
    let parent = evidence
        .iter()
        .find(|f| f["name"] == "parent.driver")
        .unwrap();
    assert_eq!(parent["value"], "(unbound)");
    assert!(
        parent["source"]
            .as_str()
            .unwrap()
            .ends_with("0000:00:05.0/driver")
    );
    assert!(!t.state.exists());
}

#[test]
fn unwritable_state_dir_still_handles_the_event() {
    let t = nitro();
    t.module_going("ena");
    t.unbind(ENS5);
    // A state dir that cannot be created (its parent is a file).
    let blocker = t.scratch("blocker");
    std::fs::write(&blocker, "").unwrap();
    let bad_state = blocker.join("state");
    let out = t.udev(
        "remove",
        ENS5,
        2,
        "ena",
        &["--state-dir", bad_state.to_str().unwrap()],
    );
    let err = ok(&out);
    assert!(err.contains("driver-unload"), "{err}");
    assert!(err.contains("warning: failed to create"), "{err}");
}

/// A sysfs `address` that is not a MAC (1 MiB of it) is no MAC: the event is
/// handled, and neither the journal nor the log line grows with it.
#[test]
fn a_huge_sysfs_address_is_no_mac_and_never_copied_whole() {
    let t = Tree::new();
    let devpath = t.ena(5, "ens5", "02:00:00:00:00:05", 2, ModKind::Loadable);
    t.write(&format!("{devpath}/address"), &"a".repeat(1 << 20));
    let out = t.udev("add", &devpath, 2, "ena", &[]);
    let err = ok(&out);
    let journal = std::fs::read_to_string(t.state.join("journal.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 1);
    assert!(journal.len() < 4096, "journal: {} bytes", journal.len());
    assert!(err.len() < 4096, "stderr: {} bytes", err.len());
    assert!(err.contains("not a link-layer address"), "{err}");
    let e = t.journal().pop().unwrap();
    assert!(e["mac"].is_null(), "{e}");
    // A colon-separated address longer than 32 bytes is none either.
    let long = vec!["aa"; 33].join(":");
    t.write(&format!("{devpath}/address"), &long);
    let o = t.run(
        &[
            "classify",
            "--json",
            "--devpath",
            &devpath,
            "--action",
            "add",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&ok_out(o))).unwrap();
    assert!(v["mac"].is_null(), "{v}");
}

/// `ID_NET_DRIVER` is a module-like name: `.` and `..` (and anything hidden
/// or path-like) are refused.
#[test]
fn driver_names_like_dot_dot_are_refused() {
    let t = nitro();
    for bad in ["..", ".", ".ena", "ena/..", "../ena", "ena x", ""] {
        let mut env = Tree::udev_env("add", ENS5, 2, "ena");
        env.retain(|(k, _)| k != "ID_NET_DRIVER");
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("ID_NET_DRIVER", bad));
        let out = t.run(&["handle"], &env);
        assert_refused(&t, &out, "invalid ID_NET_DRIVER");
    }
    ok(&t.udev("add", ENS5, 2, "virtio_net", &[]));
    ok(&t.udev("add", ENS5, 2, "mlx5_core", &[]));
}

/// Error messages quote at most a short, escaped prefix of what they got.
#[test]
fn error_messages_quote_a_short_escaped_prefix() {
    let t = nitro();
    let long = format!("e\n{}", "x".repeat(100 * 1024));
    for var in ["INTERFACE", "ID_NET_DRIVER", "IFINDEX", "SEQNUM", "ACTION"] {
        let mut env = Tree::udev_env("add", ENS5, 2, "ena");
        env.retain(|(k, _)| k != var);
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push((var, &long));
        let out = t.run(&["handle"], &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{var}: {err}");
        assert!(err.len() < 300, "{var}: {} bytes: {err}", err.len());
        assert!(err.contains("\"e\\nxxx"), "{var}: escaped: {err}");
        assert!(err.contains('…'), "{var}: cut: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // A config key is quoted the same way.
    let cfg = t.scratch("bad.json");
    std::fs::write(&cfg, format!("{{{:?}: 1}}", "k".repeat(10_000))).unwrap();
    let out = t.run(&["--config", cfg.to_str().unwrap(), "status"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).len() < 400, "{}", stderr(&out));
}

/// The state dir must be absolute (udev, the worker unit and a shell run in
/// different directories), on the command line and in the config file.
#[test]
fn a_relative_state_dir_is_a_usage_error() {
    let t = nitro();
    let out = t.run(&["--state-dir", "relative/state", "status"], &[]);
    assert_refused(&t, &out, "state_dir must be an absolute path");
    let cfg = t.scratch("rel.json");
    std::fs::write(&cfg, r#"{"state_dir": "state"}"#).unwrap();
    let mut env = Tree::udev_env("add", ENS5, 2, "ena");
    env.push(("PWD".into(), "/".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The Tree passes --state-dir; a config file's relative one alone:
    let out = Command::new(env!("CARGO_BIN_EXE_hotplug-hook"))
        .env_clear()
        .envs(env.iter().copied())
        .args(["--config", cfg.to_str().unwrap(), "--log=stderr", "handle"])
        .output()
        .unwrap();
    assert_refused(&t, &out, "state_dir must be an absolute path");
    assert!(!std::path::Path::new("state").exists());
}

fn ok_out(o: std::process::Output) -> std::process::Output {
    ok(&o);
    o
}
