//! End to end with the real systemd-udevd: the project's rule, installed
//! under /run/udev/rules.d/, makes the real udevd run the real binary with
//! the real udev environment for veth devices we create, delete and move
//! into a private network namespace. Needs root and udev (`.ci/run`
//! installs it); skipped with a message otherwise, except in CI.
//!
//! Only devices named `hhe<pid>...` are touched; eth0 never is.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hotplug-hook");

fn run(cmd: &[&str]) -> std::process::Output {
    Command::new(cmd[0]).args(&cmd[1..]).output().unwrap()
}

fn must(cmd: &[&str]) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn settle() {
    must(&["udevadm", "settle", "--timeout=20"]);
}

fn udevd_binary() -> Option<&'static str> {
    [
        "/lib/systemd/systemd-udevd",
        "/usr/lib/systemd/systemd-udevd",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

/// The udevd we use: ours (started here, stopped by PID on drop) or one
/// already running (left alone).
struct Udevd {
    child: Option<Child>,
}

impl Udevd {
    fn start(bin: &str) -> Udevd {
        let ping = || {
            run(&["udevadm", "control", "--ping", "--timeout=2"])
                .status
                .success()
        };
        if ping() {
            eprintln!("using the systemd-udevd already running");
            return Udevd { child: None };
        }
        let child = Command::new(bin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping() {
            assert!(Instant::now() < deadline, "systemd-udevd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Udevd { child: Some(child) }
    }
}

impl Drop for Udevd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything the test created on the host, removed on drop (also on panic).
#[derive(Default)]
struct Cleanup {
    links: Vec<String>,
    netns: Vec<String>,
    rules: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = run(&["ip", "link", "del", l]);
        }
        for n in &self.netns {
            let _ = run(&["ip", "netns", "del", n]);
        }
        for r in &self.rules {
            let _ = fs::remove_file(r);
        }
        let _ = run(&["udevadm", "control", "--reload"]);
    }
}

/// The shipped rule, its driver match replaced by `matcher` and its RUN
/// program by `program` (so it points at the freshly built binary).
fn rule_from_shipped(matcher: &str, program: &str) -> String {
    let shipped = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("udev-rules/90-hotplug-hook.rules"),
    )
    .unwrap();
    let mut out = String::new();
    let mut replaced = (false, false);
    for line in shipped.lines() {
        if line.starts_with("ENV{ID_NET_DRIVER}!=") {
            out.push_str(matcher);
            replaced.0 = true;
        } else if line.starts_with("RUN+=") {
            out.push_str(&format!("RUN+=\"{program}\""));
            replaced.1 = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert_eq!(replaced, (true, true), "the shipped rule changed shape");
    out
}

fn journal(state: &Path) -> Vec<Value> {
    fs::read_to_string(state.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events_for(state: &Path, iface: &str) -> Vec<Value> {
    journal(state)
        .into_iter()
        .filter(|e| e["kind"] == "event" && e["iface"] == iface)
        .collect()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn skip_or_fail(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why} in CI (.ci/run runs as root and installs udev)"
    );
    eprintln!("SKIPPED: {why}");
}

#[test]
fn real_udevd_runs_the_hook_for_veth_add_remove_and_netns_moves() {
    if !nix::unistd::geteuid().is_root() {
        return skip_or_fail("not root: the real-udevd test needs root");
    }
    let Some(udevd_bin) = udevd_binary() else {
        return skip_or_fail("systemd-udevd is not installed (apt-get install udev)");
    };
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path();
    let empty_config = scratch.join("config.json");
    fs::write(&empty_config, "{}").unwrap();
    let tag = format!("hhe{}", std::process::id() % 10000);
    let mut cleanup = Cleanup::default();
    let rules_dir = Path::new("/run/udev/rules.d");
    fs::create_dir_all(rules_dir).unwrap();
    let base = format!(
        "{BIN} --config {} --imds=false --log=stderr --systemd-dir {}",
        empty_config.display(),
        scratch.join("no-systemd").display()
    );

    // A: the shipped rule passing our veths: they are classified `virtual`.
    let state_a = scratch.join("state-a");
    // B: veth treated as a NIC, command backend, non-systemd hand-off.
    let state_b = scratch.join("state-b");
    let markers = scratch.join("markers");
    fs::create_dir_all(&markers).unwrap();
    let script = scratch.join("reconfigure.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             # Outlive the uevent: finish well after udevd is done with it.\n\
             sleep 2\n\
             gp=$(awk '{{print $4}}' /proc/$PPID/stat)\n\
             echo \"$HOTPLUG_VERDICT $(cat /proc/$PPID/comm) $(cat /proc/$gp/comm 2>/dev/null)\" \
             >> {}/\"$HOTPLUG_INTERFACE\"\n",
            markers.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    // C: cloud-init backend, cloud-init's rule gone, its FIFO held open as
    // cloud-init-hotplugd.socket would.
    let state_c = scratch.join("state-c");
    let fifo = scratch.join("hook-hotplug-cmd");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let result_json = scratch.join("result.json");
    fs::write(&result_json, "{}").unwrap();
    let mut fifo_reader = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let ci = format!(
        "--cloud-init-fifo {} --cloud-init-result {}",
        fifo.display(),
        result_json.display()
    );
    // D: in place of cloud-init's hook-hotplug, behind a rule like Debian's
    // cloud-init installs (`SUBSYSTEM=="net", RUN+=".../hook-hotplug"`).
    let state_d = scratch.join("state-d");
    let hook = scratch.join("hook-hotplug");
    std::os::unix::fs::symlink(BIN, &hook).unwrap();

    let rules = [
        (
            "90-hhe2e-a.rules",
            rule_from_shipped(
                &format!("KERNEL!=\"{tag}v*\", GOTO=\"hotplug_hook_end\""),
                &format!("{base} --state-dir {} handle", state_a.display()),
            ),
        ),
        (
            "90-hhe2e-b.rules",
            rule_from_shipped(
                &format!(
                    "KERNEL!=\"{tag}n*\", GOTO=\"hotplug_hook_end\"\nENV{{ID_NET_DRIVER}}!=\"veth\", GOTO=\"hotplug_hook_end\""
                ),
                &format!(
                    "{base} --state-dir {} --handle-virtual --command {} --dispatch fork handle",
                    state_b.display(),
                    script.display()
                ),
            ),
        ),
        (
            "90-hhe2e-c.rules",
            rule_from_shipped(
                &format!(
                    "KERNEL!=\"{tag}c*\", GOTO=\"hotplug_hook_end\"\nENV{{ID_NET_DRIVER}}!=\"veth\", GOTO=\"hotplug_hook_end\""
                ),
                &format!(
                    "{base} --state-dir {} --handle-virtual --backend cloud-init {ci} handle",
                    state_c.display()
                ),
            ),
        ),
        (
            "10-hhe2e-d.rules",
            format!(
                "SUBSYSTEM==\"net\", KERNEL==\"{tag}d*\", RUN+=\"{} --config {} --imds=false --log=stderr \
                 --systemd-dir {} --state-dir {} --handle-virtual {ci}\"\n",
                hook.display(),
                empty_config.display(),
                scratch.join("no-systemd").display(),
                state_d.display()
            ),
        ),
    ];
    for (name, text) in &rules {
        let path = rules_dir.join(name);
        fs::write(&path, text).unwrap();
        cleanup.rules.push(path);
    }
    let _udevd = Udevd::start(udevd_bin);
    must(&["udevadm", "control", "--reload"]);

    // --- A: veth add/remove → virtual, real environment --------------------
    let (va, vb) = (format!("{tag}va"), format!("{tag}vb"));
    cleanup.links.push(va.clone());
    must(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ]);
    settle();
    must(&["ip", "link", "del", &va]);
    settle();
    for iface in [&va, &vb] {
        let ev = events_for(&state_a, iface);
        let actions: Vec<&str> = ev.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["add", "remove"], "{iface}: {ev:?}");
        for e in &ev {
            assert_eq!(e["verdict"], "virtual", "{e}");
            assert_eq!(e["from_udev"], true, "{e}");
            assert!(e["seqnum"].as_u64().unwrap() > 0, "{e}");
            assert_eq!(e["driver"], "veth", "ID_NET_DRIVER from udev: {e}");
            assert_eq!(e["devpath"], format!("/devices/virtual/net/{iface}"));
        }
    }

    // --- B: veth as a NIC: add, netns move and back, delete ----------------
    let (na, nb) = (format!("{tag}na"), format!("{tag}nb"));
    let ns = format!("{tag}-ns");
    cleanup.links.push(na.clone());
    cleanup.netns.push(ns.clone());
    must(&["ip", "netns", "add", &ns]);
    must(&[
        "ip", "link", "add", &na, "type", "veth", "peer", "name", &nb,
    ]);
    settle();
    for iface in [&na, &nb] {
        assert_eq!(events_for(&state_b, iface)[0]["verdict"], "new-device");
    }
    // The events are over; the reconfiguration they started is not.
    assert!(
        !markers.join(&na).exists(),
        "the command ran inside the event"
    );
    wait_for("the reconfiguration commands", 20, || {
        markers.join(&na).exists() && markers.join(&nb).exists()
    });
    let line = fs::read_to_string(markers.join(&na)).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "new-device", "{line}");
    assert_eq!(words[1], "hotplug-hook", "run by the worker: {line}");
    assert!(
        words.get(2).is_none_or(|gp| !gp.contains("udev")),
        "the worker must not be a child of udevd: {line}"
    );

    must(&["ip", "link", "set", &nb, "netns", &ns]);
    settle();
    assert_eq!(
        events_for(&state_b, &nb).last().unwrap()["verdict"],
        "netdev-detached"
    );
    must(&["ip", "-n", &ns, "link", "set", &nb, "netns", "1"]);
    settle();
    assert_eq!(
        events_for(&state_b, &nb).last().unwrap()["verdict"],
        "device-returned"
    );
    must(&["ip", "link", "del", &na]);
    settle();
    for iface in [&na, &nb] {
        assert_eq!(
            events_for(&state_b, iface).last().unwrap()["verdict"],
            "device-removed",
            "{iface}"
        );
    }
    wait_for("the removal commands", 20, || {
        [&na, &nb].iter().all(|i| {
            fs::read_to_string(markers.join(i))
                .unwrap_or_default()
                .contains("device-removed")
        })
    });
    // Exactly: add and delete reconfigure, the netns round trip does not.
    let ran = fs::read_to_string(markers.join(&nb)).unwrap();
    let verdicts: Vec<&str> = ran.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(verdicts, ["new-device", "device-removed"], "{ran}");

    // --- C: own rule, cloud-init backend ------------------------------------
    let (ca, cb) = (format!("{tag}ca"), format!("{tag}cb"));
    cleanup.links.push(ca.clone());
    must(&[
        "ip", "link", "add", &ca, "type", "veth", "peer", "name", &cb,
    ]);
    settle();
    let mut buf = vec![0u8; 65536];
    let n = fifo_reader.read(&mut buf).unwrap_or(0);
    let forwarded = String::from_utf8_lossy(&buf[..n]).into_owned();
    let mut lines: Vec<&str> = forwarded.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!(" --subsystem=net handle --devpath=/devices/virtual/net/{ca} --udevaction=add"),
            format!(" --subsystem=net handle --devpath=/devices/virtual/net/{cb} --udevaction=add"),
        ],
        "{forwarded:?}"
    );
    cloud_init_accepts(lines[0]);

    // --- D: drop-in for cloud-init's hook-hotplug ----------------------------
    let (da, db) = (format!("{tag}da"), format!("{tag}db"));
    cleanup.links.push(da.clone());
    must(&[
        "ip", "link", "add", &da, "type", "veth", "peer", "name", &db,
    ]);
    settle();
    let n = fifo_reader.read(&mut buf).unwrap_or(0);
    let forwarded = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(forwarded.lines().count(), 2, "{forwarded:?}");
    assert!(forwarded.contains(&format!(
        "--devpath=/devices/virtual/net/{da} --udevaction=add"
    )));
    // ...and nothing for a netns move (filtered), unlike cloud-init's script.
    must(&["ip", "link", "set", &db, "netns", &ns]);
    settle();
    assert_eq!(
        events_for(&state_d, &db).last().unwrap()["verdict"],
        "netdev-detached"
    );
    assert!(
        fifo_reader.read(&mut buf).is_err(),
        "nothing forwarded for a netns move"
    );
}

/// Debian's real cloud-init parses the forwarded line the way
/// cloud-init-hotplugd.service does (`cloud-init devel hotplug-hook $args`).
/// Run in a fresh network namespace so it can reach nothing.
fn cloud_init_accepts(line: &str) {
    if !Path::new("/usr/bin/cloud-init").exists() {
        return skip_or_fail("cloud-init is not installed (apt-get install cloud-init)");
    }
    let try_line = |l: &str| {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-n",
            "timeout",
            "120",
            "/usr/bin/cloud-init",
            "devel",
            "hotplug-hook",
        ]);
        cmd.args(l.split_whitespace());
        cmd.output().unwrap()
    };
    let out = try_line(line);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(2),
        "cloud-init rejected {line:?}: {err}"
    );
    assert!(
        !err.contains("usage:"),
        "cloud-init rejected {line:?}: {err}"
    );
    // The check can fail: a malformed line is refused by the same parser.
    let bad = try_line(&line.replace("--udevaction=add", "--udevaction=plugged"));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("usage:"));
}
