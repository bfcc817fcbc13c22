//! Jobs whose worker died (stranded), the locks that tell them from running
//! ones, and the boot clock behind job deadlines and the IMDS caches. Every
//! test runs the real binary with a cleared environment.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::imds::{Eni, ImdsDouble};
use common::{ModKind, Tree, ok, stderr, stdout};
use hotplug_hook::clock::boot_ms;
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

const MAC5: &str = "02:a1:b2:c3:d4:05";
const MAC6: &str = "02:a1:b2:c3:d4:06";
const MAC7: &str = "02:a1:b2:c3:d4:07";

/// A command that appends "<iface> <verdict>" to `ran.txt`: one line per run.
fn counter(t: &Tree) -> (PathBuf, PathBuf) {
    let script = t.scratch("count.sh");
    let out = t.scratch("ran.txt");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$HOTPLUG_INTERFACE $HOTPLUG_VERDICT\" >> \"{}\"\n",
            out.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, out)
}

fn runs(out: &Path) -> Vec<String> {
    fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `handle` on a systemd host whose `systemctl` starts nothing: the job is
/// written and dispatched, and its worker never runs (as if it died before
/// taking the lock). Returns the job's path.
fn strand(t: &Tree, action: &str, devpath: &str, ifindex: u32, flags: &[&str]) -> PathBuf {
    let (path, systemd) = t.fake_systemd("true");
    let mut all = vec![systemd[0].as_str(), systemd[1].as_str()];
    all.extend_from_slice(flags);
    let before = job_files(t);
    ok(&t
        .udev_command(action, devpath, ifindex, "ena", &all, &[("PATH", &path)])
        .output()
        .unwrap());
    let mut new: Vec<PathBuf> = job_files(t)
        .into_iter()
        .filter(|j| !before.contains(j))
        .collect();
    assert_eq!(new.len(), 1, "one new job: {new:?}");
    new.pop().unwrap()
}

fn job_files(t: &Tree) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(t.state.join("jobs")) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn job_id(job: &Path) -> String {
    job.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Rewrites one field of a job file in place (it stays 0600).
fn edit_job(job: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let mut v: Value = serde_json::from_str(&fs::read_to_string(job).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    fs::write(job, v.to_string()).unwrap();
}

fn worker_entries(t: &Tree) -> Vec<Value> {
    t.journal()
        .into_iter()
        .filter(|e| e["kind"] == "worker")
        .collect()
}

/// Waits (bounded) until the journal has `n` worker entries.
fn wait_workers(t: &Tree, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = worker_entries(t);
        if w.len() >= n {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} worker entries: {w:?}",
            w.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ok_out(o: std::process::Output) -> std::process::Output {
    ok(&o);
    o
}

fn status_json(t: &Tree) -> Value {
    let o = t.run(&["status", "--json"], &[]);
    ok(&o);
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn metrics(t: &Tree) -> Value {
    serde_json::from_str(&fs::read_to_string(t.state.join("metrics.json")).unwrap()).unwrap()
}

/// `worker --job FILE` with root's settings `flags` (as `handle` had them:
/// a worker takes its command, timeouts and IMDS endpoint from its own
/// configuration, never from the job).
fn worker(t: &Tree, job: &Path, flags: &[&str]) -> Command {
    let mut args = flags.to_vec();
    args.extend(["worker", "--job", job.to_str().unwrap()]);
    let mut c = t.command(&args, &[]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn imds_flags(d: &ImdsDouble) -> Vec<String> {
    vec![
        "--imds".into(),
        "--imds-endpoint".into(),
        d.endpoint(),
        "--imds-deadline-ms".into(),
        "2000".into(),
    ]
}

#[test]
fn a_job_left_by_a_killed_worker_is_resumed_by_the_next_worker_and_runs_once() {
    // ens5 is hot-unplugged while IMDS still lists it: its worker waits.
    let d = ImdsDouble::start(vec![Eni::new(MAC5, 0)]);
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    let (script, out) = counter(&t);
    t.hot_unplug(&ens5);
    let mut flags = imds_flags(&d);
    flags.extend(["--command".into(), script.display().to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let job = strand(&t, "remove", &ens5, 2, &flags);
    let mut first = worker(&t, &job, &flags).spawn().unwrap();
    wait_until("the worker asked IMDS", || d.listings() >= 1);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(job.exists(), "the killed worker left its job behind");
    assert!(runs(&out).is_empty());
    assert_eq!(status_json(&t)["jobs"]["stranded"], 1);

    // IMDS catches up (and lists the new ENI); the next event's worker
    // runs its own job, then ens5's.
    d.enis(|e| {
        e[0].listed = false;
        e[0].keys = false;
        e.push(Eni::new(MAC6, 1));
    });
    let ens6 = t.ena(6, "ens6", MAC6, 3, ModKind::Loadable);
    let mut forked = flags.clone();
    forked.extend(["--dispatch", "fork"]);
    ok(&t.udev("add", &ens6, 3, "ena", &forked));
    let w = wait_workers(&t, 2);
    let resumed = w.iter().find(|e| e["iface"] == "ens5").unwrap();
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["job"], job_id(&job));
    assert_eq!(resumed["verdict"], "device-removed");
    assert_eq!(resumed["imds"]["result"], "agreed", "{resumed}");
    assert_eq!(resumed["action_taken"]["result"], "done", "{resumed}");
    assert!(!job.exists());
    // Its worker, started late, finds it done and leaves it alone.
    let err = ok(&worker(&t, &job, &flags).output().unwrap());
    assert!(err.contains("already done"), "{err}");
    let mut ran = runs(&out);
    ran.sort();
    assert_eq!(ran, ["ens5 device-removed", "ens6 new-device"]);
    assert_eq!(metrics(&t)["resumed_jobs"], 1);
    let s = status_json(&t);
    assert_eq!(s["jobs"]["pending"], 0, "{s}");
}

#[test]
fn scan_resumes_stranded_jobs_through_a_new_worker() {
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let (script, out) = counter(&t);
    let job = strand(
        &t,
        "add",
        &ens7,
        4,
        &["--command", script.to_str().unwrap()],
    );
    let scan = [
        "--command",
        script.to_str().unwrap(),
        "--dispatch",
        "fork",
        "scan",
    ];
    let o = t.run(&scan, &[]);
    ok(&o);
    assert!(
        stdout(&o).contains("stranded jobs: 1 resumed, 0 past their deadline"),
        "{}",
        stdout(&o)
    );
    let w = wait_workers(&t, 1);
    assert_eq!(w[0]["job"], job_id(&job), "{}", w[0]);
    assert_eq!(w[0]["action_taken"]["result"], "done", "{}", w[0]);
    assert_eq!(runs(&out), ["ens7 new-device"]);
    assert!(!job.exists());
    assert_eq!(metrics(&t)["resumed_jobs"], 1);
    // Nothing left: a second scan resumes nothing.
    let o = t.run(&scan, &[]);
    ok(&o);
    assert!(!stdout(&o).contains("stranded jobs"), "{}", stdout(&o));
    assert_eq!(runs(&out), ["ens7 new-device"]);
}

#[test]
fn a_job_held_by_another_process_is_not_run_by_a_second_worker() {
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let (script, out) = counter(&t);
    let job = strand(
        &t,
        "add",
        &ens7,
        4,
        &["--command", script.to_str().unwrap()],
    );
    // Someone (a running worker) holds the job's lock.
    let held = Flock::lock(
        fs::File::open(&job).unwrap(),
        FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, e)| e)
    .unwrap();
    let s = status_json(&t);
    assert_eq!(s["jobs"]["pending"], 1, "{s}");
    assert_eq!(s["jobs"]["running"], 1, "{s}");
    assert_eq!(s["jobs"]["stranded"], 0, "{s}");
    let root = ["--command", script.to_str().unwrap()];
    let o = worker(&t, &job, &root).output().unwrap();
    let err = ok(&o);
    assert!(err.contains("being run by another worker"), "{err}");
    assert!(runs(&out).is_empty(), "never run twice at once");
    assert!(job.exists());
    assert!(worker_entries(&t).is_empty());
    // scan leaves it alone too.
    ok(&t.run(&[root[0], root[1], "--dispatch", "fork", "scan"], &[]));
    assert!(runs(&out).is_empty());
    assert!(job.exists());

    // Released without finishing (the holder died): stranded, and run once.
    drop(held);
    let s = status_json(&t);
    assert_eq!(s["jobs"]["stranded"], 1, "{s}");
    assert_eq!(s["jobs"]["list"][0]["id"], job_id(&job), "{s}");
    assert_eq!(s["jobs"]["list"][0]["iface"], "ens7", "{s}");
    assert_eq!(s["jobs"]["list"][0]["past_deadline"], false, "{s}");
    let text = stdout(&t.run(&["status"], &[]));
    assert!(
        text.contains("jobs pending: 1 (0 held by a running worker, 1 stranded)"),
        "{text}"
    );
    ok(&worker(&t, &job, &root).output().unwrap());
    assert_eq!(runs(&out), ["ens7 new-device"]);
    assert!(!job.exists());
}

#[test]
fn a_stranded_job_past_its_deadline_is_reported_and_not_run() {
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let (script, out) = counter(&t);
    let prom = t.scratch("hotplug_hook.prom");
    let job = strand(
        &t,
        "add",
        &ens7,
        4,
        &[
            "--command",
            script.to_str().unwrap(),
            "--imds-confirm-timeout-secs",
            "0",
            "--metrics-file",
            prom.to_str().unwrap(),
        ],
    );
    // Deadline: confirm timeout (0 s) + 30 s margin, on the boot clock.
    let Some(old) = boot_ms().checked_sub(31_000) else {
        eprintln!("SKIPPED: booted less than 31 s ago");
        return;
    };
    edit_job(&job, |j| {
        j.insert("created_boot_ms".into(), old.into());
    });
    // Deadlines come from root's configuration, as `handle` had it.
    let o = t.run(
        &["--imds-confirm-timeout-secs", "0", "status", "--json"],
        &[],
    );
    let s: Value = serde_json::from_str(&stdout(&ok_out(o))).unwrap();
    assert_eq!(s["jobs"]["stranded"], 1, "{s}");
    assert_eq!(s["jobs"]["list"][0]["past_deadline"], true, "{s}");

    let o = t.run(
        &[
            "--dispatch",
            "fork",
            "--imds-confirm-timeout-secs",
            "0",
            "--metrics-file",
            prom.to_str().unwrap(),
            "scan",
        ],
        &[],
    );
    ok(&o);
    assert!(
        stdout(&o).contains("stranded jobs: 0 resumed, 1 past their deadline"),
        "{}",
        stdout(&o)
    );
    assert!(!job.exists(), "reported jobs are removed");
    assert!(runs(&out).is_empty(), "a job past its deadline is not run");
    let w = worker_entries(&t);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0]["result"], "stranded");
    assert_eq!(w[0]["found_by"], "scan");
    assert_eq!(w[0]["job"], job_id(&job));
    assert_eq!(w[0]["iface"], "ens7");
    assert_eq!(w[0]["verdict"], "new-device");
    assert_eq!(w[0]["ok"], false);
    assert!(w[0]["age_ms"].as_u64().unwrap() >= 31_000, "{}", w[0]);
    assert!(w[0]["ts_ms"].as_u64().is_some() && w[0]["boot_ms"].as_u64().is_some());

    let s = status_json(&t);
    assert_eq!(s["jobs"]["pending"], 0, "{s}");
    assert_eq!(s["metrics"]["stranded_jobs"], 1, "{s}");
    assert_eq!(
        s["journal"].as_array().unwrap().last().unwrap()["result"],
        "stranded"
    );
    let text = stdout(&t.run(&["status"], &[]));
    assert!(text.contains("0 resumed, 1 past their deadline"), "{text}");
    assert!(
        text.contains(&format!("[job {} stranded]", job_id(&job))),
        "{text}"
    );
    let prom = fs::read_to_string(&prom).unwrap();
    assert!(
        prom.contains("\nhotplug_hook_stranded_jobs_total 1\n"),
        "{prom}"
    );
}

#[test]
fn jobs_created_in_the_future_or_without_a_boot_stamp_are_past_their_deadline() {
    let t = Tree::new();
    let (script, out) = counter(&t);
    let flags = ["--command", script.to_str().unwrap()];
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    let ens6 = t.ena(6, "ens6", MAC6, 3, ModKind::Loadable);
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let future = strand(&t, "add", &ens5, 2, &flags);
    let unstamped = strand(&t, "add", &ens6, 3, &flags);
    let own = strand(&t, "add", &ens7, 4, &flags);
    // A stamp from "the future" (an earlier boot's, or a stepped clock's)...
    edit_job(&future, |j| {
        j.insert("created_boot_ms".into(), (boot_ms() + 3_600_000).into());
    });
    // ...and a job from a release that only stamped the wall clock.
    edit_job(&unstamped, |j| {
        j.remove("created_boot_ms");
    });
    let s = status_json(&t);
    assert_eq!(s["jobs"]["stranded"], 3, "{s}");
    for j in s["jobs"]["list"].as_array().unwrap() {
        let expect = j["iface"] != "ens7";
        assert_eq!(j["past_deadline"], expect, "{j}");
    }

    ok(&worker(&t, &own, &flags).output().unwrap());
    assert_eq!(runs(&out), ["ens7 new-device"]);
    assert!(job_files(&t).is_empty());
    let w = worker_entries(&t);
    assert_eq!(w.len(), 3, "{w:?}");
    for (job, iface) in [(&future, "ens5"), (&unstamped, "ens6")] {
        let e = w.iter().find(|e| e["job"] == job_id(job)).unwrap();
        assert_eq!(e["result"], "stranded", "{e}");
        assert_eq!(e["found_by"], "worker", "{e}");
        assert_eq!(e["iface"], iface);
        assert!(e["age_ms"].is_null(), "{e}");
    }
    assert_eq!(metrics(&t)["stranded_jobs"], 2);

    // Its own job stamped in the future: not run either (exit 1: not done).
    let ens8 = t.ena(8, "ens8", "02:a1:b2:c3:d4:08", 5, ModKind::Loadable);
    let again = strand(&t, "add", &ens8, 5, &flags);
    edit_job(&again, |j| {
        j.insert("created_boot_ms".into(), (boot_ms() + 3_600_000).into());
    });
    let o = worker(&t, &again, &flags).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(runs(&out), ["ens7 new-device"]);
    assert!(!again.exists());
    assert_eq!(worker_entries(&t).last().unwrap()["result"], "stranded");
}

#[test]
fn a_job_removed_while_its_worker_waits_is_not_run() {
    let d = ImdsDouble::start(vec![Eni::new(MAC5, 0)]);
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    let (script, out) = counter(&t);
    t.hot_unplug(&ens5);
    let mut flags = imds_flags(&d);
    flags.extend(["--command".into(), script.display().to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let job = strand(&t, "remove", &ens5, 2, &flags);
    let w = worker(&t, &job, &flags).spawn().unwrap();
    wait_until("the worker asked IMDS", || d.listings() >= 1);
    // Cancelled by hand while IMDS still lags; then IMDS agrees.
    fs::remove_file(&job).unwrap();
    d.enis(|e| {
        e[0].listed = false;
        e[0].keys = false;
    });
    let o = w.wait_with_output().unwrap();
    ok(&o);
    assert!(runs(&out).is_empty(), "a removed job is not run");
    let e = worker_entries(&t).pop().unwrap();
    assert_eq!(e["result"], "cancelled", "{e}");
    assert!(e["action_taken"].is_null(), "{e}");
}

#[test]
fn a_job_unlinked_before_its_worker_locks_it_is_not_run() {
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let (script, out) = counter(&t);
    let job = strand(
        &t,
        "add",
        &ens7,
        4,
        &["--command", script.to_str().unwrap()],
    );
    // Another worker ran it and removed it before this one started.
    fs::remove_file(&job).unwrap();
    let o = worker(&t, &job, &["--command", script.to_str().unwrap()])
        .output()
        .unwrap();
    let err = ok(&o);
    assert!(err.contains("already done"), "{err}");
    assert!(runs(&out).is_empty());
    assert!(worker_entries(&t).is_empty());
}

#[test]
fn worker_refuses_symlinked_oversized_and_foreign_jobs() {
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let (script, out) = counter(&t);
    let job = strand(
        &t,
        "add",
        &ens7,
        4,
        &["--command", script.to_str().unwrap()],
    );
    let root = ["--command", script.to_str().unwrap()];
    // Outside its state dir's jobs/: not one of its jobs.
    let outside = t.scratch("job.json");
    fs::copy(&job, &outside).unwrap();
    let o = worker(&t, &outside, &root).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not in"), "{}", stderr(&o));
    let link = t.state.join("jobs/link.json");
    std::os::unix::fs::symlink(&job, &link).unwrap();
    let o = worker(&t, &link, &root).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    let big = t.state.join("jobs/big.json");
    fs::write(&big, " ".repeat(70 * 1024)).unwrap();
    fs::set_permissions(&big, fs::Permissions::from_mode(0o600)).unwrap();
    let o = worker(&t, &big, &root).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("larger than 65536 bytes"),
        "{}",
        stderr(&o)
    );
    fs::set_permissions(&job, fs::Permissions::from_mode(0o620)).unwrap();
    let o = worker(&t, &job, &root).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(runs(&out).is_empty());
}

/// `imds get macs/` with a long listing TTL: what is fetched, what is cached.
fn get_macs(t: &Tree, d: &ImdsDouble) {
    let flags = imds_flags(d);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend([
        "--imds-listing-ttl-ms",
        "600000",
        "imds",
        "get",
        "meta-data/network/interfaces/macs/",
    ]);
    let o = t.run(&args, &[]);
    ok(&o);
    assert_eq!(stdout(&o), format!("{MAC5}/\n"));
}

fn edit_state_file(t: &Tree, name: &str, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = t.state.join(name);
    let mut v: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    fs::write(&path, v.to_string()).unwrap();
}

#[test]
fn imds_caches_stamped_in_the_future_or_by_the_wall_clock_are_refetched() {
    let d = ImdsDouble::start(vec![Eni::new(MAC5, 0)]);
    let t = Tree::new();
    get_macs(&t, &d);
    get_macs(&t, &d);
    assert_eq!(
        (d.token_puts(), d.listings()),
        (1, 1),
        "cached: {:?}",
        d.seen()
    );

    // Stamped an hour ahead (another boot's file, a forged one): stale.
    let future = boot_ms() + 3_600_000;
    for name in ["imds-token.json", "imds-macs.json"] {
        edit_state_file(&t, name, |v| {
            v.insert("fetched_boot_ms".into(), future.into());
        });
    }
    get_macs(&t, &d);
    assert_eq!((d.token_puts(), d.listings()), (2, 2), "{:?}", d.seen());
    get_macs(&t, &d);
    assert_eq!((d.token_puts(), d.listings()), (2, 2), "fresh again");

    // An older release's files: wall-clock stamps far in the future, no boot
    // stamp. Expired, never "fresh for ever".
    let token: Value =
        serde_json::from_str(&fs::read_to_string(t.state.join("imds-token.json")).unwrap())
            .unwrap();
    fs::write(
        t.state.join("imds-token.json"),
        serde_json::json!({
            "endpoint": token["endpoint"],
            "token": token["token"],
            "expires_ms": u64::MAX / 2,
        })
        .to_string(),
    )
    .unwrap();
    fs::write(
        t.state.join("imds-macs.json"),
        serde_json::json!({
            "endpoint": d.endpoint(),
            "fetched_ms": u64::MAX / 2,
            "macs": [MAC6],
        })
        .to_string(),
    )
    .unwrap();
    get_macs(&t, &d);
    assert_eq!((d.token_puts(), d.listings()), (3, 3), "{:?}", d.seen());
    let token: Value =
        serde_json::from_str(&fs::read_to_string(t.state.join("imds-token.json")).unwrap())
            .unwrap();
    assert!(token["fetched_boot_ms"].as_u64().unwrap() <= boot_ms());
    assert_eq!(token["ttl_secs"], 21600);
}

/// A job is the event and the verdict, never settings: a job file with a
/// planted `command` (top level, or in a format-1 `config`) is not obeyed.
/// The worker runs root's configured command, or, for a job of another
/// format, nothing.
#[test]
fn a_planted_argv_in_a_job_never_runs() {
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", MAC7, 4, ModKind::Loadable);
    let (script, out) = counter(&t);
    let planted = t.scratch("planted.sh");
    let pwned = t.scratch("pwned");
    fs::write(
        &planted,
        format!("#!/bin/sh\ntouch \"{}\"\n", pwned.display()),
    )
    .unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o755)).unwrap();
    let root = ["--command", script.to_str().unwrap()];
    let job = strand(&t, "add", &ens7, 4, &root);
    let written: Value = serde_json::from_str(&fs::read_to_string(&job).unwrap()).unwrap();
    assert_eq!(written["format"], 2, "{written}");
    for key in ["config", "command", "command_timeout_secs", "state_dir"] {
        assert!(
            written.get(key).is_none(),
            "the job carries {key}: {written}"
        );
    }
    // Rewritten the way whoever could write jobs/ would.
    let argv = serde_json::json!([planted.to_str().unwrap()]);
    edit_job(&job, |j| {
        j.insert("command".into(), argv.clone());
        j.insert("argv".into(), argv.clone());
        j.insert(
            "config".into(),
            serde_json::json!({"backend": "command", "command": argv.clone(),
                               "command_timeout_secs": 1}),
        );
    });
    ok(&worker(&t, &job, &root).output().unwrap());
    assert!(!pwned.exists(), "the planted argv ran");
    assert_eq!(runs(&out), ["ens7 new-device"], "root's command ran");

    // A job of format 1 (settings inside): not run, reported, removed.
    let ens8 = t.ena(8, "ens8", "02:a1:b2:c3:d4:08", 5, ModKind::Loadable);
    let job = strand(&t, "add", &ens8, 5, &root);
    edit_job(&job, |j| {
        j.remove("format");
        j.insert(
            "config".into(),
            serde_json::json!({"backend": "command", "command": argv.clone()}),
        );
    });
    let o = worker(&t, &job, &root).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown format"), "{}", stderr(&o));
    // Stranded, it is reported by the next sweep, with a warning.
    let o = t.run(&[root[0], root[1], "--dispatch", "fork", "scan"], &[]);
    ok(&o);
    assert!(stderr(&o).contains("unknown format"), "{}", stderr(&o));
    assert!(!job.exists());
    assert!(!pwned.exists(), "the planted argv ran");
    assert_eq!(runs(&out), ["ens7 new-device"]);
    let e = worker_entries(&t).pop().unwrap();
    assert_eq!(e["result"], "stranded", "{e}");
}
