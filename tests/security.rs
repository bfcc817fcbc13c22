//! The state directory is a trust boundary: what an unprivileged local user
//! (uid 65534, through `setpriv`) can do against the hook running as root,
//! and what root's hook does with a state dir chosen badly. Runs as root
//! (skipped with a message otherwise; a failure in CI, where it must run).
//! Figures (time held, memory, bytes) are printed as `FIGURE:` lines.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ModKind, Tree, ok, stderr};
use serde_json::Value;

const NOBODY: u32 = 65534;
const MAC5: &str = "02:a1:b2:c3:d4:05";
const MAC7: &str = "02:a1:b2:c3:d4:07";

/// True when running as root; otherwise says why the test is skipped (and
/// fails in CI, which runs this file as root).
fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "tests/security.rs must run as root in CI"
    );
    eprintln!("SKIPPED: not root (the attacker's side needs setpriv to uid {NOBODY})");
    false
}

/// `argv` as uid/gid 65534 with no supplementary groups.
fn as_nobody(argv: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)")
}

/// Waits for a child at most `bound` (a bound on a hang, not a speed test).
fn wait_bounded(mut child: Child, bound: Duration) -> (Output, Duration) {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), start.elapsed());
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {bound:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A command backend that records each run in `ran`.
fn recorder(t: &Tree) -> (PathBuf, PathBuf) {
    let script = t.scratch("recorder.sh");
    let ran = t.scratch("ran");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$HOTPLUG_INTERFACE\" >> \"{}\"\n",
            ran.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, ran)
}

fn max_rss_children_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut ru: nix::libc::rusage = std::mem::zeroed();
        if nix::libc::getrusage(nix::libc::RUSAGE_CHILDREN, &mut ru) != 0 {
            return 0;
        }
        ru.ru_maxrss
    }
}

// --- (a) the lock -----------------------------------------------------------

#[test]
fn an_unprivileged_user_cannot_open_the_lock_and_a_held_lock_is_waited_for_boundedly() {
    if !root() {
        return;
    }
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    let lock = t.state.join("lock");
    assert_eq!(fs::metadata(&t.state).unwrap().mode() & 0o777, 0o700);
    assert_eq!(fs::metadata(&lock).unwrap().mode() & 0o777, 0o600);
    // Make the path up to the state dir traversable, as /run is: only the
    // state dir's own mode keeps the user out.
    let mut up = t.state.parent().unwrap().to_path_buf();
    while up != Path::new("/") {
        let m = fs::metadata(&up).unwrap().mode();
        fs::set_permissions(&up, fs::Permissions::from_mode((m & 0o7777) | 0o011)).unwrap();
        up = up.parent().unwrap().to_path_buf();
    }
    let lock_s = lock.to_str().unwrap();
    let o = as_nobody(&["flock", "--shared", "--nonblock", lock_s, "true"]);
    assert!(!o.status.success(), "uid {NOBODY} opened {lock_s}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Permission denied"), "{err}");
    eprintln!("FIGURE: uid {NOBODY} opening {lock_s}: {}", err.trim());

    // Root's own long holder (a stuck process): handle gives up after the
    // bounded wait, exits 4 and says so.
    let mut holder = Command::new("flock")
        .args([lock_s, "sleep", "30"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Command::new("flock")
        .args(["--nonblock", lock_s, "true"])
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    t.hot_unplug(&ens5);
    let child = t
        .udev_command("remove", &ens5, 2, "ena", &[], &[])
        .spawn()
        .unwrap();
    let (out, took) = wait_bounded(child, Duration::from_secs(10));
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is held by another process"), "{err}");
    assert!(
        err.contains("device-removed"),
        "the verdict is still logged: {err}"
    );
    eprintln!("FIGURE: handle against a held lock exited 4 after {took:?}");
}

// --- (b) a state dir chosen badly ------------------------------------------

#[test]
fn a_state_dir_owned_by_another_user_or_writable_by_all_is_refused() {
    if !root() {
        return;
    }
    for (what, setup) in [("owned by uid 65534", 0o700u32), ("mode 0777", 0o777)] {
        let t = Tree::new();
        let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
        let (script, ran) = recorder(&t);
        fs::create_dir(&t.state).unwrap();
        fs::set_permissions(&t.state, fs::Permissions::from_mode(setup)).unwrap();
        if setup == 0o700 {
            nix::unistd::chown(&t.state, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
        }
        let out = t.udev(
            "add",
            &ens7,
            4,
            "ena",
            &["--command", script.to_str().unwrap(), "--dispatch", "fork"],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        assert!(
            err.contains(&format!("refusing state directory {}", t.state.display())),
            "{what}: the path is named: {err}"
        );
        assert!(
            err.contains("ens7 add: new-device"),
            "{what}: verdict logged: {err}"
        );
        let left: Vec<_> = fs::read_dir(&t.state).unwrap().collect();
        assert!(left.is_empty(), "{what}: created {left:?}");
        // Nothing forwarded: no worker was started, the command never ran.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!ran.exists(), "{what}: the command ran");
        // The worker refuses it too.
        let o = t.run(
            &[
                "--command",
                script.to_str().unwrap(),
                "worker",
                "--job",
                t.state.join("jobs/x.json").to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(3), "{what}: {}", stderr(&o));
        eprintln!(
            "FIGURE: state dir {what}: exit 3, {} entries created",
            left.len()
        );
    }
}

// --- (c) records that are not files ----------------------------------------

#[test]
fn a_record_that_is_dev_zero_or_a_fifo_is_skipped_in_bounded_time_and_memory() {
    if !root() {
        return;
    }
    for kind in ["symlink to /dev/zero", "FIFO"] {
        let t = Tree::new();
        let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
        ok(&t.run(&["scan"], &[]));
        let rec = t.record_file("ens5");
        fs::remove_file(&rec).unwrap();
        if kind == "FIFO" {
            nix::unistd::mkfifo(&rec, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        } else {
            std::os::unix::fs::symlink("/dev/zero", &rec).unwrap();
        }
        t.hot_unplug(&ens5);
        let child = t
            .udev_command("remove", &ens5, 2, "ena", &[], &[])
            .spawn()
            .unwrap();
        let (out, took) = wait_bounded(child, Duration::from_secs(10));
        let err = ok(&out);
        assert!(err.contains("skipping"), "{kind}: a warning: {err}");
        assert!(err.contains(rec.to_str().unwrap()), "{kind}: {err}");
        let j = t.journal();
        assert_eq!(j.len(), 1, "{kind}: one journal entry");
        let rss = max_rss_children_kib();
        assert!(rss < 256 * 1024, "{kind}: a child reached {rss} KiB");
        eprintln!(
            "FIGURE: ifaces record as a {kind}: exit 0 after {took:?}, largest child RSS so far {rss} KiB"
        );
    }
}

// --- (d) jobs ---------------------------------------------------------------

#[test]
fn an_unprivileged_user_cannot_plant_a_job_and_a_planted_argv_never_runs() {
    if !root() {
        return;
    }
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let (script, ran) = recorder(&t);
    let (path, systemd) = t.fake_systemd("true");
    let root_cfg = ["--command", script.to_str().unwrap()];
    let mut flags = vec![systemd[0].as_str(), systemd[1].as_str()];
    flags.extend(root_cfg);
    ok(&t
        .udev_command("add", &ens7, 4, "ena", &flags, &[("PATH", &path)])
        .output()
        .unwrap());
    let job = t.only_job();
    // The user cannot even reach jobs/.
    let planted_path = t.state.join("jobs/0-0.json");
    let o = as_nobody(&["touch", planted_path.to_str().unwrap()]);
    assert!(!o.status.success(), "uid {NOBODY} wrote into jobs/");
    // Root's job, rewritten with a planted argv: root's command runs instead.
    let pwned = t.scratch("pwned");
    let mut v: Value = serde_json::from_str(&fs::read_to_string(&job).unwrap()).unwrap();
    let argv = serde_json::json!(["/usr/bin/touch", pwned.to_str().unwrap()]);
    v["command"] = argv.clone();
    v["config"] = serde_json::json!({"backend": "command", "command": argv});
    fs::write(&job, v.to_string()).unwrap();
    let mut args = root_cfg.to_vec();
    args.extend(["worker", "--job", job.to_str().unwrap()]);
    ok(&t.run(&args, &[]));
    assert!(!pwned.exists(), "the planted argv ran");
    assert_eq!(fs::read_to_string(&ran).unwrap(), "ens7\n");
}

// --- (e) journal growth -----------------------------------------------------

#[test]
fn journal_growth_is_bounded_for_a_huge_address() {
    if !root() {
        return;
    }
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    let (sock_path, sock) = {
        let p = t.scratch("journal.sock");
        let s = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        (p, s)
    };
    t.write(&format!("{ens5}/address"), &"f".repeat(1 << 20));
    let out = t.udev(
        "add",
        &ens5,
        2,
        "ena",
        &[
            "--log",
            "journal",
            "--journal-socket",
            sock_path.to_str().unwrap(),
        ],
    );
    ok(&out);
    let journal = fs::metadata(t.state.join("journal.jsonl")).unwrap().len();
    let mut logged = 0usize;
    let mut buf = vec![0u8; 1 << 21];
    while let Ok(n) = sock.recv(&mut buf) {
        logged += n;
    }
    assert!(journal < 4096, "journal.jsonl: {journal} bytes");
    assert!(logged > 0 && logged < 8192, "log datagrams: {logged} bytes");
    let e = t.journal().pop().unwrap();
    assert!(e["mac"].is_null(), "{e}");
    eprintln!("FIGURE: 1 MiB address: journal.jsonl {journal} bytes, log datagrams {logged} bytes");
}
