//! The man page renders cleanly and documents every subcommand and flag the
//! binary has; the shipped unit files are valid.

use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use hotplug_hook::cli::Cli;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn man_text() -> String {
    std::fs::read_to_string(root().join("man/hotplug-hook.8"))
        .unwrap()
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "")
}

/// A tool the test needs: present, or (in CI, which installs it) a failure.
fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing in CI: .ci/run installs it"
        );
        eprintln!("SKIPPED: {name} is not installed (apt-get install {name})");
    }
    found
}

#[test]
fn man_page_lints_clean() {
    if !tool("mandoc") {
        return;
    }
    let out = Command::new("mandoc")
        .args(["-T", "lint", "-W", "warning"])
        .arg(root().join("man/hotplug-hook.8"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "mandoc lint:\n{text}"
    );
}

#[test]
fn man_page_documents_every_subcommand_and_flag() {
    let man = man_text();
    let cli = Cli::command();
    let mut missing = Vec::new();
    let flags_missing = |cmd: &clap::Command| -> Vec<String> {
        cmd.get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| *l != "help" && *l != "version")
            .map(|l| format!("--{l}"))
            .filter(|f| !man.contains(f.as_str()))
            .collect()
    };
    missing.extend(flags_missing(&cli));
    for sub in cli.get_subcommands() {
        let name = sub.get_name();
        if name != "help"
            && !man.contains(&format!(".B {name}"))
            && !man.contains(&format!(".BI \"{name} "))
        {
            missing.push(name.to_string());
        }
        missing.extend(flags_missing(sub));
        for s in sub.get_subcommands() {
            missing.extend(flags_missing(s));
        }
    }
    for v in hotplug_hook::verdict::Verdict::ALL {
        if !man.contains(&format!(".B {}", v.as_str())) {
            missing.push(v.as_str().to_string());
        }
    }
    assert!(missing.is_empty(), "not in man/hotplug-hook.8: {missing:?}");
}

#[test]
fn readme_links_the_man_page_and_names_every_subcommand() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("man/hotplug-hook.8"));
    for sub in Cli::command().get_subcommands() {
        if sub.get_name() != "help" {
            assert!(
                readme.contains(&format!("hotplug-hook {}", sub.get_name())),
                "{}",
                sub.get_name()
            );
        }
    }
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    if !tool("systemd-analyze") {
        return;
    }
    // verify wants the ExecStart binary to exist: point copies at ours.
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let unit = std::fs::read_to_string(root().join("systemd").join(name)).unwrap();
        let unit = unit.replace(
            "/usr/libexec/hotplug-hook",
            env!("CARGO_BIN_EXE_hotplug-hook"),
        );
        let path = dir.path().join(name);
        std::fs::write(&path, unit).unwrap();
        path
    };
    let template = copy("hotplug-hook-worker@.service");
    let scan = copy("hotplug-hook-scan.service");
    let reconcile = copy("hotplug-hook-reconcile.service");
    let instance = dir
        .path()
        .join("hotplug-hook-worker@run-hotplug\\x2dhook-jobs-1.json.service");
    std::os::unix::fs::symlink(&template, &instance).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&instance)
        .arg(&scan)
        .arg(&reconcile)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    // Without systemd as PID 1 it may complain about the manager; the unit
    // itself must produce no warning.
    let about_unit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("hotplug-hook-"))
        .collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify:\n{text}");
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
}

#[test]
fn make_install_puts_everything_in_fhs_places() {
    if !tool("make") {
        return;
    }
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new("make")
        .arg("-C")
        .arg(root())
        .arg("install")
        .arg(format!("DESTDIR={}", dest.path().display()))
        .arg(format!("BIN={}", env!("CARGO_BIN_EXE_hotplug-hook")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = dest.path();
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode("usr/libexec/hotplug-hook"), 0o755);
    assert_eq!(mode("usr/lib/udev/rules.d/90-hotplug-hook.rules"), 0o644);
    assert_eq!(
        mode("usr/lib/systemd/system/hotplug-hook-worker@.service"),
        0o644
    );
    assert_eq!(
        mode("usr/lib/systemd/system/hotplug-hook-scan.service"),
        0o644
    );
    assert_eq!(
        mode("usr/lib/systemd/system/hotplug-hook-reconcile.service"),
        0o644
    );
    assert_eq!(mode("usr/share/man/man8/hotplug-hook.8"), 0o644);
    assert_eq!(
        std::fs::read_link(d.join("usr/sbin/hotplug-hook")).unwrap(),
        Path::new("/usr/libexec/hotplug-hook")
    );
    let rule =
        std::fs::read_to_string(d.join("usr/lib/udev/rules.d/90-hotplug-hook.rules")).unwrap();
    assert!(rule.contains("RUN+=\"/usr/libexec/hotplug-hook handle\""));
    let bash =
        std::fs::read_to_string(d.join("usr/share/bash-completion/completions/hotplug-hook"))
            .unwrap();
    for word in [
        "handle",
        "classify",
        "scan",
        "status",
        "imds",
        "--sysfs-root",
    ] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    assert!(
        d.join("usr/share/zsh/vendor-completions/_hotplug-hook")
            .exists()
    );
    assert!(
        d.join("usr/share/fish/vendor_completions.d/hotplug-hook.fish")
            .exists()
    );
    let out = Command::new(d.join("usr/libexec/hotplug-hook"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hotplug-hook "));
}

#[test]
fn deb_metadata_ships_every_file() {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for f in [
        "udev-rules/90-hotplug-hook.rules",
        "systemd/hotplug-hook-worker@.service",
        "systemd/hotplug-hook-scan.service",
        "systemd/hotplug-hook-reconcile.service",
        "man/hotplug-hook.8",
    ] {
        assert!(root().join(f).exists(), "{f}");
        // An asset, or a unit that systemd-units adds (and enables).
        let unit = f
            .strip_prefix("systemd/")
            .and_then(|u| u.strip_suffix(".service"))
            .map(|u| format!("unit-name = \"{u}\", unit-scripts = \"systemd/\""));
        assert!(
            toml.contains(&format!("[\"{f}\"")) || unit.is_some_and(|u| toml.contains(u.as_str())),
            "{f} is not in [package.metadata.deb] assets or systemd-units"
        );
    }
}

#[test]
fn man_page_documents_every_classify_json_field() {
    let out = Command::new(env!("CARGO_BIN_EXE_hotplug-hook"))
        .current_dir(root())
        .env_clear()
        .args([
            "--state-dir",
            "/nonexistent/hotplug-hook",
            "--sysfs-root",
            "tests/fixtures/nitro-ena-unload/sys",
            "--imds=false",
            "classify",
            "--json",
            "--action",
            "remove",
            "--devpath",
            "/devices/pci0000:00/0000:00:05.0/net/ens5",
            "--driver",
            "ena",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let man = man_text();
    let section =
        &man[man.find(".SH JSON OUTPUT").unwrap()..man.find(".SH RECONFIGURATION").unwrap()];
    for key in v.as_object().unwrap().keys() {
        assert!(
            section.contains(key.as_str()),
            "classify --json field {key:?} is not in JSON OUTPUT"
        );
    }
}

/// The README's settings table and the man page's GLOBAL OPTIONS follow the
/// one table of settings (`src/config.rs`): every setting, with its default
/// (and in the README the subcommands that use it), and no other.
#[test]
fn docs_list_every_setting_with_its_default() {
    use hotplug_hook::config::SETTINGS;
    let cell = |s: &str| match s {
        "" => "—".to_string(),
        s => format!("`{s}`"),
    };
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `--")).collect();
    let expected: Vec<String> = SETTINGS
        .iter()
        .map(|s| {
            let value = match s.value_name {
                "BOOL" => "[=BOOL]".to_string(),
                v => format!(" {v}"),
            };
            let default = cell(&(s.default)());
            let mut what = s.doc.to_string();
            let choices: Vec<String> = (s.parser)(clap::Arg::new("x"))
                .get_possible_values()
                .iter()
                .map(|p| format!("`{}`", p.get_name()))
                .collect();
            if !choices.is_empty() && s.value_name != "BOOL" {
                what += &format!(": {}", choices.join(", "));
            }
            let uses = s.uses.join(", ");
            format!("| `--{}{value}` | {default} | {what} | {uses} |", s.flag)
        })
        .collect();
    assert!(
        rows == expected,
        "README.md's settings table differs from src/config.rs; it should read:\n{}",
        expected.join("\n")
    );

    let man = man_text();
    let options = &man[man.find(".SH GLOBAL OPTIONS").unwrap()..man.find(".SH VERDICTS").unwrap()];
    let blocks: Vec<&str> = options.split(".TP\n").skip(1).collect();
    let mut documented = Vec::new();
    for s in SETTINGS {
        let flag = format!("--{}", s.flag);
        let block = blocks.iter().find(|b| {
            b.lines()
                .next()
                .and_then(|l| l.split([' ', '[']).nth(1))
                .is_some_and(|f| f == flag)
        });
        let Some(block) = block else {
            panic!("{flag} has no .TP entry in GLOBAL OPTIONS of man/hotplug-hook.8");
        };
        let default = (s.default)();
        assert!(
            block.contains(&default),
            "man/hotplug-hook.8 {flag}: the default {default:?} is not in\n{block}"
        );
        documented.push(flag);
    }
    for b in &blocks {
        let flag = b.lines().next().and_then(|l| l.split([' ', '[']).nth(1));
        if let Some(f) = flag.filter(|f| f.starts_with("--") && *f != "--config" && *f != "-v,") {
            assert!(
                documented.iter().any(|d| d == f),
                "man/hotplug-hook.8 documents {f}, which is not a setting"
            );
        }
    }
}
