//! Reconfiguration backends: cloud-init's FIFO and the command worker.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ModKind, Tree, ok};

const MAC7: &str = "02:a1:b2:c3:d4:07";

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// Holds the FIFO open the way cloud-init-hotplugd.socket does, so written
/// lines stay in the pipe until read.
fn hold(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .unwrap()
}

fn drain(f: &mut fs::File) -> String {
    let mut buf = vec![0u8; 1 << 17];
    match f.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => String::new(),
    }
}

/// A tree with a fresh ENI (ens7) and cloud-init set up on a systemd host.
fn cloud_init_host() -> (Tree, String, std::path::PathBuf, Vec<String>) {
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let fifo = t.scratch("hook-hotplug-cmd");
    mkfifo(&fifo);
    let systemd = t.scratch("systemd-system");
    fs::create_dir_all(&systemd).unwrap();
    let flags = vec![
        "--backend".to_string(),
        "cloud-init".into(),
        "--cloud-init-fifo".into(),
        fifo.display().to_string(),
        "--systemd-dir".into(),
        systemd.display().to_string(),
    ];
    (t, ens7, fifo, flags)
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn cloud_init_gets_the_hook_hotplug_line_for_a_new_device() {
    let (t, ens7, fifo, flags) = cloud_init_host();
    let mut reader = hold(&fifo);
    ok(&t.udev("add", &ens7, 4, "ena", &refs(&flags)));
    assert_eq!(t.last_verdict(), "new-device");
    assert_eq!(
        drain(&mut reader),
        format!(" --subsystem=net handle --devpath={ens7} --udevaction=add\n")
    );
    let e = t.journal().pop().unwrap();
    assert_eq!(e["action_taken"]["backend"], "cloud-init");
    assert_eq!(e["action_taken"]["result"], "done");
}

#[test]
fn cloud_init_gets_nothing_for_transient_events() {
    let (t, ens7, fifo, flags) = cloud_init_host();
    let mut reader = hold(&fifo);
    ok(&t.run(&["scan"], &[]));
    t.module_going("ena");
    t.unbind(&ens7);
    ok(&t.udev("remove", &ens7, 4, "ena", &refs(&flags)));
    assert_eq!(t.last_verdict(), "driver-unload");
    assert_eq!(drain(&mut reader), "");
}

#[test]
fn cloud_init_remove_is_forwarded_only_when_configured() {
    let (t, ens7, fifo, mut flags) = cloud_init_host();
    let mut reader = hold(&fifo);
    t.hot_unplug(&ens7);
    ok(&t.udev("remove", &ens7, 4, "ena", &refs(&flags)));
    assert_eq!(t.last_verdict(), "device-removed");
    assert_eq!(drain(&mut reader), "");
    let e = t.journal().pop().unwrap();
    assert_eq!(e["action_taken"]["result"], "skipped", "{e}");

    flags.push("--cloud-init-forward-remove".into());
    ok(&t.udev("remove", &ens7, 4, "ena", &refs(&flags)));
    assert_eq!(
        drain(&mut reader),
        format!(" --subsystem=net handle --devpath={ens7} --udevaction=remove\n")
    );
}

#[test]
fn cloud_init_not_ready_is_skipped() {
    let (t, ens7, fifo, flags) = cloud_init_host();
    fs::remove_file(&fifo).unwrap();
    ok(&t.udev("add", &ens7, 4, "ena", &refs(&flags)));
    assert!(!fifo.exists(), "the FIFO is never created by us");
    let e = t.journal().pop().unwrap();
    assert_eq!(e["action_taken"]["result"], "skipped");
    assert!(
        e["action_taken"]["detail"]
            .as_str()
            .unwrap()
            .contains("not listening")
    );
}

#[test]
fn cloud_init_without_systemd_waits_for_result_json() {
    let (t, ens7, fifo, _) = cloud_init_host();
    let result = t.scratch("result.json");
    let flags = [
        "--backend",
        "cloud-init",
        "--cloud-init-fifo",
        fifo.to_str().unwrap(),
        "--cloud-init-result",
        result.to_str().unwrap(),
    ];
    let mut reader = hold(&fifo);
    ok(&t.udev("add", &ens7, 4, "ena", &flags));
    assert_eq!(
        t.journal().pop().unwrap()["action_taken"]["result"],
        "skipped"
    );
    assert_eq!(drain(&mut reader), "");
    fs::write(&result, "{}").unwrap();
    fs::remove_file(t.record_file("ens7")).unwrap();
    ok(&t.udev("add", &ens7, 4, "ena", &flags));
    assert_eq!(t.journal().pop().unwrap()["action_taken"]["result"], "done");
    assert!(drain(&mut reader).contains("--udevaction=add"));
}

#[test]
fn cloud_init_fifo_without_reader_or_full_never_blocks() {
    let (t, ens7, fifo, flags) = cloud_init_host();
    // Nobody holds it: our read-write open cannot block.
    let start = Instant::now();
    ok(&t.udev("add", &ens7, 4, "ena", &refs(&flags)));
    assert_eq!(t.journal().pop().unwrap()["action_taken"]["result"], "done");
    // Held but full (cloud-init stuck): the write fails instead of blocking.
    let mut stuck = hold(&fifo);
    let chunk = [b'x'; 4096];
    while stuck.write(&chunk).is_ok() {}
    fs::remove_file(t.record_file("ens7")).unwrap();
    ok(&t.udev("add", &ens7, 4, "ena", &refs(&flags)));
    let e = t.journal().pop().unwrap();
    assert_eq!(e["action_taken"]["result"], "failed", "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A command that records its argv and environment, after a delay.
fn recorder(t: &Tree, delay: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let script = t.scratch("recorder.sh");
    let out = t.scratch("recorded.txt");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep {delay}\n{{ echo \"argv=$*\"; env | sort; }} > \"{}.tmp\"\nmv \"{0}.tmp\" \"{0}\"\n",
            out.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, out)
}

fn wait_for(path: &Path, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(s) = fs::read_to_string(path) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn command_runs_outside_the_hook_with_the_event_in_its_environment() {
    let t = Tree::new();
    // Shell metacharacters in a (kernel-valid) name must arrive verbatim.
    let odd = t.ena(7, "e$(id);x", MAC7, 4, ModKind::Loadable);
    let (script, out) = recorder(&t, "1");
    let start = Instant::now();
    ok(&t.udev(
        "add",
        &odd,
        4,
        "ena",
        &[
            "--command",
            script.to_str().unwrap(),
            "--command",
            "two words",
            "--dispatch",
            "fork",
        ],
    ));
    let hook_took = start.elapsed();
    assert!(
        !out.exists(),
        "the hook returned before the command finished"
    );
    assert!(hook_took < Duration::from_millis(1000), "{hook_took:?}");
    let rec = wait_for(&out, 10);
    assert!(rec.contains("argv=two words\n"), "{rec}");
    assert!(rec.contains("HOTPLUG_INTERFACE=e$(id);x\n"), "{rec}");
    assert!(rec.contains(&format!("HOTPLUG_MAC={MAC7}\n")), "{rec}");
    assert!(rec.contains("HOTPLUG_ACTION=add\n"), "{rec}");
    assert!(rec.contains("HOTPLUG_VERDICT=new-device\n"), "{rec}");
    assert!(rec.contains(&format!("HOTPLUG_DEVPATH={odd}\n")), "{rec}");
    assert!(rec.contains("HOTPLUG_DRIVER=ena\n"), "{rec}");
    // The worker journals the outcome and removes its job.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let j = t.journal();
        if let Some(w) = j.iter().find(|e| e["kind"] == "worker") {
            assert_eq!(w["ok"], true, "{w}");
            assert_eq!(w["verdict"], "new-device");
            break;
        }
        assert!(Instant::now() < deadline, "no worker entry: {j:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fs::read_dir(t.state.join("jobs")).unwrap().count(), 0);
    let e = t
        .journal()
        .into_iter()
        .find(|e| e["kind"] == "event")
        .unwrap();
    assert_eq!(e["action_taken"]["result"], "dispatched");
}

#[test]
fn command_is_started_through_the_template_unit_on_systemd_hosts() {
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let (script, out) = recorder(&t, "0");
    // A fake systemctl that records how it was called.
    let calls = t.scratch("systemctl-calls");
    let (path, systemd) = t.fake_systemd(&format!("echo \"$@\" >> \"{}\"", calls.display()));
    let flags = [
        systemd[0].as_str(),
        systemd[1].as_str(),
        "--command",
        script.to_str().unwrap(),
    ];
    ok(&t
        .udev_command("add", &ens7, 4, "ena", &flags, &[("PATH", &path)])
        .output()
        .unwrap());
    let call = fs::read_to_string(&calls).unwrap();
    let unit = call
        .trim()
        .strip_prefix("start --no-block hotplug-hook-worker@")
        .unwrap_or_else(|| panic!("unexpected systemctl call {call:?}"))
        .strip_suffix(".service")
        .unwrap();
    // What the unit's `%f` gives the worker.
    let job = hotplug_hook::dispatch::unescape_instance(unit);
    assert!(job.starts_with(&t.state), "{job:?}");
    let meta = fs::metadata(&job).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    // Run the worker as the unit would, with root's configuration (the
    // same command the hook had): the job carries no command.
    ok(&t.run(
        &[
            "--command",
            script.to_str().unwrap(),
            "worker",
            "--job",
            job.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(
        fs::read_to_string(&out)
            .unwrap()
            .contains("HOTPLUG_VERDICT=new-device")
    );
    assert!(!job.exists());
}

#[test]
fn hung_or_failing_commands_never_block_the_hook() {
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let start = Instant::now();
    ok(&t.udev(
        "add",
        &ens7,
        4,
        "ena",
        &[
            "--command",
            "/bin/sleep",
            "--command",
            "30",
            "--command-timeout-secs",
            "1",
            "--dispatch",
            "fork",
        ],
    ));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // The worker kills it at the timeout and says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let w = loop {
        if let Some(w) = t.journal().into_iter().find(|e| e["kind"] == "worker") {
            break w;
        }
        assert!(Instant::now() < deadline, "worker never finished");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(w["ok"], false);
    assert_eq!(w["action_taken"]["result"], "failed");
    assert_eq!(
        w["action_taken"]["detail"],
        "/bin/sleep killed after the timeout"
    );

    // A command that does not exist: still exit 0 for the hook.
    fs::remove_file(t.record_file("ens7")).unwrap();
    ok(&t.udev(
        "add",
        &ens7,
        4,
        "ena",
        &["--command", "/nonexistent/cmd", "--dispatch", "fork"],
    ));
}

#[test]
fn worker_refuses_jobs_others_could_write() {
    let t = Tree::new();
    fs::create_dir_all(t.state.join("jobs")).unwrap();
    let job = t.state.join("jobs/1.json");
    fs::write(
        &job,
        format!(
            r#"{{"format":2,"id":"1","iface":"ens7","action":"add","verdict":"new-device",
                "backend":"command","confirm":"none","created_boot_ms":{}}}"#,
            hotplug_hook::clock::boot_ms(),
        ),
    )
    .unwrap();
    fs::set_permissions(&job, fs::Permissions::from_mode(0o666)).unwrap();
    let root = [
        "--command",
        "/bin/true",
        "worker",
        "--job",
        job.to_str().unwrap(),
    ];
    let o = t.run(&root, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stderr(&o).contains("writable by others"));
    fs::set_permissions(&job, fs::Permissions::from_mode(0o600)).unwrap();
    ok(&t.run(&root, &[]));
    let w = t.journal().pop().unwrap();
    assert_eq!(w["kind"], "worker");
    assert_eq!(w["action_taken"]["result"], "done");
    assert!(!job.exists());
}

#[test]
fn drop_in_for_cloud_init_hook_hotplug_filters_then_forwards() {
    let (t, ens7, fifo, flags) = cloud_init_host();
    let mut reader = hold(&fifo);
    // What `dpkg-divert` + a symlink leave in place of cloud-init's script.
    let dir = t.scratch("usr-lib-cloud-init");
    fs::create_dir_all(&dir).unwrap();
    let hook = dir.join("hook-hotplug");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hotplug-hook"), &hook).unwrap();
    // cloud-init's rule passes every net event; only the udev environment.
    // (The flags stand in for /etc/hotplug-hook/config.json: test paths.)
    let flags: Vec<&str> = flags
        .iter()
        .map(String::as_str)
        .filter(|f| *f != "--backend" && *f != "cloud-init")
        .collect();
    let run = |action: &str, devpath: &str, ifindex: u32, driver: &str| {
        let env = Tree::udev_env(action, devpath, ifindex, driver);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ok(&t.command_as(&hook, &flags, &env).output().unwrap());
    };
    run("add", &ens7, 4, "ena");
    assert_eq!(t.last_verdict(), "new-device");
    assert_eq!(
        drain(&mut reader),
        format!(" --subsystem=net handle --devpath={ens7} --udevaction=add\n")
    );
    // A veth and a driver reload: filtered out, nothing forwarded.
    let veth = t.veth("veth0", "0a:00:00:00:00:01", 9);
    run("add", &veth, 9, "veth");
    assert_eq!(t.last_verdict(), "virtual");
    t.module_going("ena");
    t.unbind(&ens7);
    run("remove", &ens7, 4, "ena");
    assert_eq!(t.last_verdict(), "driver-unload");
    assert_eq!(drain(&mut reader), "");
    let e = t
        .journal()
        .into_iter()
        .find(|e| e["kind"] == "event")
        .unwrap();
    assert_eq!(e["action_taken"]["backend"], "cloud-init");
}

/// Unit instance names are escaped exactly as `systemd-escape --path` does
/// (the real binary), and what it refuses we refuse.
#[test]
fn unit_instance_names_match_systemd_escape() {
    use std::os::unix::ffi::OsStrExt;
    let Ok(probe) = std::process::Command::new("systemd-escape")
        .arg("--version")
        .output()
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-escape is missing in CI"
        );
        eprintln!("SKIPPED: no systemd-escape (package systemd)");
        return;
    };
    assert!(probe.status.success());
    let table: &[&[u8]] = &[
        b"/run/hotplug-hook/jobs/1-2.json",
        b"/run//hotplug-hook//jobs/1.json",
        b"//run/x",
        b"/run/x/",
        b"/run/x//",
        b"/",
        b"//",
        b".",
        b"..",
        b"/run/./x",
        b"/./run",
        b"/run/.",
        b"/run/../x",
        b"/..",
        b"/run/..",
        b"/.hidden/x",
        b"/x/.y",
        b"/x/..y",
        b"/x/...",
        b"/a b/c",
        b"/a-b/c~d",
        b"/a\\b/x",
        b"/caf\xc3\xa9/\xc3\xbc.json",
        b"/\xe2\x82\xac/\xf0\x9f\x98\x80",
        b"/not-utf8/\xff\xfe",
        b"/x:y_z.json",
        b"/A/Z/0/9",
        b"/tab\there/nl\nhere",
        b"/%i/%f/$x",
    ];
    for raw in table {
        let path = Path::new(std::ffi::OsStr::from_bytes(raw));
        let real = std::process::Command::new("systemd-escape")
            .arg("--path")
            .arg("--")
            .arg(path)
            .output()
            .unwrap();
        let ours = hotplug_hook::dispatch::escape_path(path);
        if real.status.success() {
            let want = String::from_utf8(real.stdout).unwrap();
            let want = want.trim_end_matches('\n');
            assert_eq!(
                ours.as_deref().map_err(|e| e.to_string()),
                Ok(want),
                "{path:?}"
            );
            // And the unit's %f gives the path back (simplified).
            let back = hotplug_hook::dispatch::unescape_instance(want);
            let again = hotplug_hook::dispatch::escape_path(&back).unwrap();
            assert_eq!(again, want, "{path:?} -> {back:?}");
        } else {
            assert!(
                ours.is_err(),
                "{path:?}: systemd-escape refuses it ({}), we gave {ours:?}",
                String::from_utf8_lossy(&real.stderr).trim()
            );
        }
    }
}
