//! The `ec2-net-utils` backend against the real amazon-ec2-net-utils
//! package: its files are downloaded with `apt-get download` (never
//! installed: its rule and units would act on this host's NICs), unpacked
//! with `dpkg-deb -x` and cached under `target/ec2-net-utils/`. What the
//! worker runs is read from the package's own udev rule and scripts, so a
//! package that changes them fails these tests. A fake `systemctl` records
//! its argv; the IMDS double confirms attaches and detaches.
//!
//! Without apt or the network the tests are skipped with a message, except
//! in CI (`CI` set), where `.ci/run` makes sure `apt-get download` works.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::imds::{Eni, ImdsDouble};
use common::{ModKind, Tree, ok};
use serde_json::Value;

const MAC5: &str = "02:a1:b2:c3:d4:05";
const MAC6: &str = "02:a1:b2:c3:d4:06";
const RULE: &str = "usr/lib/udev/rules.d/99-vpc-policy-routes.rules";
const SCRIPT: &str = "usr/bin/setup-policy-routes";
const LIB: &str = "usr/share/amazon-ec2-net-utils/lib.sh";

// --- the real package ---------------------------------------------------------

/// The unpacked package (once per test run), or None (skipped) off CI.
fn package() -> Option<&'static Path> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| match fetch() {
        Ok(root) => Some(root),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "amazon-ec2-net-utils is needed in CI: {why}"
            );
            eprintln!("SKIPPED: cannot get amazon-ec2-net-utils ({why})");
            None
        }
    })
    .as_deref()
}

fn fetch() -> Result<PathBuf, String> {
    // target/<profile>/hotplug-hook → target/
    let target = Path::new(env!("CARGO_BIN_EXE_hotplug-hook"))
        .ancestors()
        .nth(2)
        .unwrap();
    let cache = target.join("ec2-net-utils");
    let root = cache.join("root");
    if root.join(RULE).is_file() {
        return Ok(root);
    }
    fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    let work = tempfile::tempdir_in(&cache).map_err(|e| e.to_string())?;
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd
            .output()
            .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{:?} failed: {}",
                cmd.get_program(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(Command::new("apt-get")
        .args(["download", "-q", "amazon-ec2-net-utils"])
        .current_dir(work.path()))?;
    let deb = fs::read_dir(work.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let unpacked = work.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    // Another test binary may have won the race: either copy will do.
    let _ = fs::rename(&unpacked, &root);
    if root.join(RULE).is_file() {
        Ok(root)
    } else {
        Err(format!("{RULE} is not in {}", deb.display()))
    }
}

/// One line of the package's udev rule.
#[derive(Debug)]
struct RuleLine {
    action: String,
    drivers: Vec<String>,
    /// The RUN+= command, split as udev splits it.
    run: Vec<String>,
}

/// The value of `KEY=="v"` / `KEY+="v"` in a rule line.
fn rule_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    let rest = line[at..].strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

fn rule_lines(root: &Path) -> Vec<RuleLine> {
    let text = fs::read_to_string(root.join(RULE)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| RuleLine {
            action: rule_value(l, "ACTION==").expect(l).to_string(),
            drivers: rule_value(l, "ENV{ID_NET_DRIVER}==")
                .expect(l)
                .split('|')
                .map(String::from)
                .collect(),
            run: rule_value(l, "RUN+=")
                .expect(l)
                .split_whitespace()
                .map(String::from)
                .collect(),
        })
        .collect()
}

/// The command the rule runs for `action` on `iface` (`$name` is udev's
/// kernel name); with several, the one whose verb is `verb`.
fn rule_command(root: &Path, action: &str, verb: Option<&str>, iface: &str) -> Vec<String> {
    let lines: Vec<RuleLine> = rule_lines(root)
        .into_iter()
        .filter(|l| l.action == action)
        .filter(|l| verb.is_none_or(|v| l.run.get(1).is_some_and(|w| w == v)))
        .collect();
    assert_eq!(lines.len(), 1, "{action} {verb:?}: {lines:?}");
    assert!(
        lines[0].drivers.iter().any(|d| d == "ena"),
        "the rule handles ena: {lines:?}"
    );
    lines[0]
        .run
        .iter()
        .map(|a| a.replace("$name", iface))
        .collect()
}

/// A setting's default, from the one table of settings.
fn default_of(key: &str) -> String {
    let s = hotplug_hook::config::SETTINGS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no setting {key}"));
    (s.default)()
}

/// The paths the package's `stop` action deletes under its networkd dir,
/// for `iface`; checks our default dir is the package's.
fn stop_removes(root: &Path, iface: &str) -> Vec<String> {
    let script = fs::read_to_string(root.join(SCRIPT)).unwrap();
    let unitdir = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("declare -r unitdir="))
        .expect("setup-policy-routes declares unitdir")
        .trim_matches('"');
    assert_eq!(default_of("ec2_net_utils_network_dir"), unitdir);
    let stop = &script[script.find("\nstop)").expect("a stop action")..];
    let stop = &stop[..stop.find(";;").unwrap()];
    assert!(stop.contains("rm -rf"), "{stop}");
    let paths: Vec<String> = stop
        .split('"')
        .filter(|w| w.starts_with("${unitdir}/"))
        .map(|w| {
            w.trim_start_matches("${unitdir}/")
                .replace("${iface}", iface)
        })
        .collect();
    // The one path it deletes elsewhere (`/run/network/$iface`) is a
    // leftover of ec2-net-utils 1.x: no 2.x script writes it.
    let lib = fs::read_to_string(root.join(LIB)).unwrap();
    assert!(!lib.contains("/run/network"), "lib.sh writes /run/network");
    assert_eq!(script.matches("/run/network/").count(), 1, "{script}");
    paths
}

/// What `setup-policy-routes <iface> start` creates under the networkd dir
/// (its `create_interface_config`, `create_if_overrides`, `create_rules`
/// and `create_ipv4_aliases`): the `70-<iface>.network` symlink to
/// `80-ec2.network` and the drop-ins. Checked against the real lib.sh.
fn write_generated(root: &Path, dir: &Path, iface: &str, defconfig: &Path) {
    let lib = fs::read_to_string(root.join(LIB)).unwrap();
    for wants in [
        r#"local cfgfile="${unitdir}/70-${iface}.network""#,
        r#"ln -s "$defconfig" "$cfgfile""#,
        r#"local cfgdir="${cfgfile}.d""#,
        r#"local dropin="${cfgdir}/eni.conf""#,
        r#"local drop_in_dir="${unitdir}/70-${iface}.network.d""#,
        r#"local file="$drop_in_dir/ec2net_policy_${family}.conf""#,
        r#"local file="$drop_in_dir/ec2net_alias.conf""#,
    ] {
        assert!(lib.contains(wants), "lib.sh no longer has {wants}");
    }
    fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::symlink(defconfig, dir.join(format!("70-{iface}.network"))).unwrap();
    let dropins = dir.join(format!("70-{iface}.network.d"));
    fs::create_dir_all(&dropins).unwrap();
    for (name, text) in [
        (
            "eni.conf",
            format!("# Configuration for {iface} generated by policy-routes@{iface}.service\n"),
        ),
        ("ec2net_policy_4.conf", "[RoutingPolicyRule]\n".into()),
        ("ec2net_policy_6.conf", String::new()),
        ("ec2net_alias.conf", String::new()),
    ] {
        fs::write(dropins.join(name), text).unwrap();
    }
}

/// Every path under `dir` with its content (a symlink's target), to show
/// what changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                fs::read_to_string(&p).unwrap()
            };
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), what);
        }
    }
    out
}

// --- the host -----------------------------------------------------------------

/// A Nitro host with ens5 and ens6 recorded, a networkd dir where the
/// package configured both (and an `ens50` whose name has ens5's as its
/// prefix), a fake systemctl and the flags for the backend.
struct Host {
    t: Tree,
    d: ImdsDouble,
    ens5: String,
    ens6: String,
    network: PathBuf,
    defconfig: PathBuf,
    calls: PathBuf,
    flags: Vec<String>,
}

impl Host {
    fn new(root: &Path, enis: Vec<Eni>) -> Host {
        let t = Tree::new();
        let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
        let ens6 = t.ena(6, "ens6", MAC6, 3, ModKind::Loadable);
        ok(&t.run(&["scan"], &[]));
        let d = ImdsDouble::start(enis);
        let calls = t.scratch("systemctl-calls");
        t.fake_systemd(&format!("echo \"$@\" >> \"{}\"", calls.display()));
        let network = t.scratch("run-systemd-network");
        let defconfig = t.scratch("usr-lib-systemd-network/80-ec2.network");
        fs::create_dir_all(defconfig.parent().unwrap()).unwrap();
        fs::copy(
            root.join("usr/lib/systemd/network/80-ec2.network"),
            &defconfig,
        )
        .unwrap();
        for iface in ["ens5", "ens6", "ens50"] {
            write_generated(root, &network, iface, &defconfig);
        }
        let flags = vec![
            "--imds".into(),
            "--imds-endpoint".into(),
            d.endpoint(),
            "--backend".into(),
            "ec2-net-utils".into(),
            "--ec2-net-utils-systemctl".into(),
            t.scratch("bin/systemctl").display().to_string(),
            "--ec2-net-utils-network-dir".into(),
            network.display().to_string(),
            "--dispatch".into(),
            "fork".into(),
        ];
        Host {
            t,
            d,
            ens5,
            ens6,
            network,
            defconfig,
            calls,
            flags,
        }
    }

    fn handle(&self, action: &str, devpath: &str, ifindex: u32) -> Value {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        ok(&self.t.udev(action, devpath, ifindex, "ena", &flags));
        self.t.journal().pop().unwrap()
    }

    /// Jobs `handle` left for a worker (none for a transient verdict).
    fn jobs(&self) -> usize {
        fs::read_dir(self.t.state.join("jobs")).map_or(0, |d| d.count())
    }

    /// The systemctl argv lines recorded so far.
    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Waits for the `n`th worker journal entry (workers run detached).
    fn worker_entry(&self, n: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let w: Vec<Value> = self
                .t
                .journal()
                .into_iter()
                .filter(|e| e["kind"] == "worker")
                .collect();
            if w.len() >= n {
                return w[n - 1].clone();
            }
            assert!(Instant::now() < deadline, "no worker entry {n}: {w:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// --- the tests ----------------------------------------------------------------

#[test]
fn new_device_runs_what_the_package_rule_runs_on_add() {
    let Some(root) = package() else { return };
    let h = Host::new(root, vec![Eni::new(MAC5, 0), Eni::new(MAC6, 1)]);
    let ens7 =
        h.t.ena(7, "ens7", "02:a1:b2:c3:d4:07", 4, ModKind::Loadable);
    h.d.enis(|e| e.push(Eni::new("02:a1:b2:c3:d4:07", 2)));
    let before = snapshot(&h.network);
    let e = h.handle("add", &ens7, 4);
    assert_eq!(e["verdict"], "new-device", "{e}");
    let w = h.worker_entry(1);
    assert_eq!(w["imds"]["result"], "agreed", "{w}");
    assert_eq!(w["action_taken"]["backend"], "ec2-net-utils", "{w}");
    assert_eq!(w["action_taken"]["result"], "done", "{w}");

    let rule = rule_command(root, "add", None, "ens7");
    assert_eq!(rule[0], default_of("ec2_net_utils_systemctl"), "{rule:?}");
    assert_eq!(h.calls(), vec![rule[1..].join(" ")]);
    assert_eq!(snapshot(&h.network), before, "an attach deletes nothing");
}

#[test]
fn detach_stops_the_units_and_removes_only_that_enis_config() {
    let Some(root) = package() else { return };
    // IMDS already lists ens6 only: ens5's ENI was detached.
    let h = Host::new(root, vec![Eni::new(MAC6, 0)]);
    let before = snapshot(&h.network);
    h.t.hot_unplug(&h.ens5);
    let e = h.handle("remove", &h.ens5, 2);
    assert_eq!(e["verdict"], "device-removed", "{e}");
    let w = h.worker_entry(1);
    assert_eq!(w["imds"]["result"], "agreed", "{w}");
    assert_eq!(w["action_taken"]["result"], "done", "{w}");

    // systemctl: the rule's `disable --now` line (which covers the units of
    // its `stop --no-block` line), then networkd reloads the config.
    let disable = rule_command(root, "remove", Some("disable"), "ens5");
    let stop = rule_command(root, "remove", Some("stop"), "ens5");
    assert_eq!(disable[0], default_of("ec2_net_utils_systemctl"));
    let units: Vec<&String> = disable.iter().filter(|a| a.contains('@')).collect();
    for unit in stop.iter().filter(|a| a.contains('@')) {
        assert!(units.contains(&unit), "{unit} is not stopped: {disable:?}");
    }
    assert_eq!(
        h.calls(),
        vec![
            disable[1..].join(" "),
            "try-reload-or-restart systemd-networkd.service".to_string()
        ]
    );

    // Files: exactly what the package's stop deletes for ens5.
    let gone = stop_removes(root, "ens5");
    assert_eq!(gone, ["70-ens5.network", "70-ens5.network.d"]);
    let mut expected = before.clone();
    expected.retain(|p, _| !gone.iter().any(|g| p.starts_with(g)));
    assert_eq!(snapshot(&h.network), expected);
    assert!(expected.contains_key(Path::new("70-ens6.network.d/eni.conf")));
    assert!(expected.contains_key(Path::new("70-ens50.network")));
    assert!(h.defconfig.is_file(), "the link's target stays");

    // The ENI comes back: a new device, configured from a clean slate.
    h.d.enis(|e| e.push(Eni::new(MAC5, 1)));
    let back = h.t.ena(5, "ens5", MAC5, 9, ModKind::Loadable);
    let e = h.handle("add", &back, 9);
    assert_eq!(e["verdict"], "new-device", "{e}");
    let w = h.worker_entry(2);
    assert_eq!(w["action_taken"]["result"], "done", "{w}");
    let add = rule_command(root, "add", None, "ens5");
    assert_eq!(h.calls().last().unwrap(), &add[1..].join(" "));
}

#[test]
fn driver_reload_unbind_and_netns_move_run_nothing() {
    let Some(root) = package() else { return };
    let h = Host::new(root, vec![Eni::new(MAC5, 0), Eni::new(MAC6, 1)]);
    let before = snapshot(&h.network);
    let pci5 = "/devices/pci0000:00/0000:00:05.0";
    let pci6 = "/devices/pci0000:00/0000:00:06.0";

    // `modprobe -r ena && modprobe ena`: both NICs go and come back.
    h.t.module_going("ena");
    h.t.unbind(&h.ens5);
    h.t.unbind(&h.ens6);
    for (devpath, ifindex) in [(&h.ens5, 2), (&h.ens6, 3)] {
        let e = h.handle("remove", devpath, ifindex);
        assert_eq!(e["verdict"], "driver-unload", "{e}");
        assert!(e["action_taken"].is_null(), "{e}");
    }
    h.t.module_freed("pci", "ena", "ena");
    h.t.driver("pci", "ena", "ena", ModKind::Loadable);
    h.t.bind(pci5, "pci", "ena");
    h.t.bind(pci6, "pci", "ena");
    let ens5 = h.t.netdev(pci5, "ens5", MAC5, 7);
    let ens6 = h.t.netdev(pci6, "ens6", MAC6, 8);
    for (devpath, ifindex) in [(&ens5, 7), (&ens6, 8)] {
        let e = h.handle("add", devpath, ifindex);
        assert_eq!(e["verdict"], "device-returned", "{e}");
        assert!(e["action_taken"].is_null(), "{e}");
    }
    assert_eq!(h.jobs(), 0, "a reload hands nothing to a worker");

    // ens6 moved into a container's namespace and back.
    h.t.netns_move(&ens6);
    let e = h.handle("remove", &ens6, 8);
    assert_eq!(e["verdict"], "netdev-detached", "{e}");
    let ens6 = h.t.netdev(pci6, "ens6", MAC6, 8);
    let e = h.handle("add", &ens6, 8);
    assert_eq!(e["verdict"], "device-returned", "{e}");
    assert_eq!(h.jobs(), 0, "a netns move hands nothing to a worker");

    // ens5 unbound through sysfs: IMDS, asked as a tie-breaker, still lists
    // it, so the worker does nothing either.
    h.t.unbind(&ens5);
    let e = h.handle("remove", &ens5, 7);
    assert_eq!(e["verdict"], "driver-unbind", "{e}");
    let w = h.worker_entry(1);
    assert_eq!(w["imds"]["result"], "no-action", "{w}");
    assert!(w["action_taken"].is_null(), "{w}");

    assert!(h.calls().is_empty(), "systemctl ran: {:?}", h.calls());
    assert_eq!(snapshot(&h.network), before, "no file touched");
}

#[test]
fn make_install_ec2_net_utils_masks_the_package_rule() {
    let Some(root) = package() else { return };
    let found = Command::new("make").arg("--version").output().is_ok();
    if !found {
        assert!(std::env::var_os("CI").is_none(), "make is missing in CI");
        eprintln!("SKIPPED: make is not installed");
        return;
    }
    let dest = tempfile::tempdir().unwrap();
    let make = |target: &str| {
        let out = Command::new("make")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg(target)
            .arg(format!("DESTDIR={}", dest.path().display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    make("install-ec2-net-utils");
    // udev reads a rule from /etc/udev/rules.d/ instead of the same-named
    // one in /usr/lib/udev/rules.d/; a link to /dev/null disables it.
    assert!(root.join(RULE).is_file(), "the package ships {RULE}");
    let name = Path::new(RULE).file_name().unwrap();
    let mask = dest.path().join("etc/udev/rules.d").join(name);
    assert_eq!(fs::read_link(&mask).unwrap(), Path::new("/dev/null"));
    let config = fs::read_to_string(dest.path().join("etc/hotplug-hook/config.json")).unwrap();
    let settings = hotplug_hook::config::Settings::from_json(&config).unwrap();
    let cfg = settings.resolve().unwrap();
    assert_eq!(cfg.backend.as_str(), "ec2-net-utils");
    // An existing config is left alone.
    fs::write(dest.path().join("etc/hotplug-hook/config.json"), "{}").unwrap();
    make("install-ec2-net-utils");
    assert_eq!(
        fs::read_to_string(dest.path().join("etc/hotplug-hook/config.json")).unwrap(),
        "{}"
    );
    make("uninstall-ec2-net-utils");
    assert!(fs::symlink_metadata(&mask).is_err());
}
