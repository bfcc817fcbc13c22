//! The IMDS client against the double: request counts, caching, single
//! flight, fault handling, and the worker's confirmation of verdicts.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::{Duration, Instant};

use common::imds::{Eni, ImdsDouble, MACS, TOKEN_PATH};
use common::{ModKind, Tree, ok, stderr, stdout};
use serde_json::Value;

const MAC5: &str = "02:a1:b2:c3:d4:05";
const MAC6: &str = "02:a1:b2:c3:d4:06";

fn imds_flags(d: &ImdsDouble) -> Vec<String> {
    vec![
        "--imds".into(),
        "--imds-endpoint".into(),
        d.endpoint(),
        // Fast tests: short backoff budget.
        "--imds-deadline-ms".into(),
        "2000".into(),
    ]
}

fn get(t: &Tree, d: &ImdsDouble, path: &str, extra: &[&str]) -> Output {
    let flags = imds_flags(d);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    args.extend(["imds", "get", path]);
    t.run(&args, &[])
}

fn counters(t: &Tree) -> Value {
    let m: Value =
        serde_json::from_str(&fs::read_to_string(t.state.join("metrics.json")).unwrap()).unwrap();
    m["imds"].clone()
}

#[test]
fn token_is_fetched_once_and_cached_with_0600() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![Eni::new(MAC5, 0)]);
    let out = get(&t, &d, "meta-data/instance-id", &[]);
    ok(&out);
    assert_eq!(stdout(&out), "i-0123456789abcdef0\n");
    let out = get(&t, &d, "meta-data/instance-id", &[]);
    ok(&out);
    assert_eq!(d.token_puts(), 1, "the second run reused the cached token");
    assert_eq!(d.count("GET", "/latest/meta-data/instance-id"), 2);
    assert!(
        d.seen()
            .iter()
            .filter(|s| s.method == "GET")
            .all(|s| s.had_token)
    );
    let mode = fs::metadata(t.state.join("imds-token.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let c = counters(&t);
    assert_eq!(c["requests"]["token 200"], 1);
    assert_eq!(c["requests"]["other 200"], 2);
    assert_eq!(c["cache_hits"]["token"], 1);
    assert_eq!(c["token_fetches"], 1);
    assert_eq!(c["latency_count"], 3);
}

#[test]
fn endpoint_from_the_environment() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![]);
    let ep = d.endpoint();
    ok(&t.run(
        &["--imds", "imds", "get", "meta-data/instance-id"],
        &[("HOTPLUG_HOOK_IMDS_ENDPOINT", ep.as_str())],
    ));
    assert_eq!(d.total(), 2);
}

#[test]
fn expired_token_is_renewed_and_401_retried_once() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![Eni::new(MAC5, 0)]);
    ok(&get(&t, &d, "meta-data/instance-id", &[]));
    // The cached token is revoked server-side: one 401, a new token, one retry.
    d.expire_tokens();
    ok(&get(&t, &d, "meta-data/instance-id", &[]));
    assert_eq!(d.token_puts(), 2);
    assert_eq!(d.count("GET", "/latest/meta-data/instance-id"), 3);
    // 401 on every request: retried once only, then an error.
    d.faults(|f| f.unauthorized_next = 100);
    let out = get(&t, &d, "meta-data/instance-id", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("HTTP 401 with a fresh token"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.token_puts(), 3);
    assert_eq!(d.count("GET", "/latest/meta-data/instance-id"), 5);
}

#[test]
fn short_token_ttl_is_renewed_before_expiry() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![]);
    ok(&get(
        &t,
        &d,
        "meta-data/instance-id",
        &["--imds-token-ttl-secs", "1"],
    ));
    std::thread::sleep(Duration::from_millis(1100));
    ok(&get(
        &t,
        &d,
        "meta-data/instance-id",
        &["--imds-token-ttl-secs", "1"],
    ));
    assert_eq!(d.token_puts(), 2);
    assert_eq!(
        d.count("GET", "/latest/meta-data/instance-id"),
        2,
        "no 401 round trip"
    );
}

#[test]
fn listing_is_cached_for_a_short_time() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![Eni::new(MAC5, 0), Eni::new(MAC6, 1)]);
    for _ in 0..3 {
        let out = get(&t, &d, "meta-data/network/interfaces/macs/", &[]);
        ok(&out);
        assert_eq!(stdout(&out), format!("{MAC5}/\n{MAC6}/\n"));
    }
    assert_eq!(d.listings(), 1);
    let out = get(
        &t,
        &d,
        "meta-data/network/interfaces/macs/",
        &["--imds-listing-ttl-ms", "0"],
    );
    ok(&out);
    assert_eq!(d.listings(), 2);
    assert_eq!(counters(&t)["cache_hits"]["macs"], 2);
}

#[test]
fn throttling_gets_at_most_the_configured_retries() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![]);
    ok(&get(&t, &d, "meta-data/instance-id", &[])); // token cached
    d.faults(|f| f.status = Some(429));
    let start = Instant::now();
    let out = get(&t, &d, "meta-data/instance-id", &["--imds-retries", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("HTTP 429 after 3 attempts"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.count("GET", "/latest/meta-data/instance-id"), 1 + 3);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(counters(&t)["retries"], 2);
    assert_eq!(counters(&t)["requests"]["other 429"], 3);
}

#[test]
fn transient_503_and_resets_are_retried() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![]);
    d.faults(|f| {
        f.status = Some(503);
        f.status_count = Some(2);
    });
    ok(&get(&t, &d, "meta-data/instance-id", &[]));
    assert_eq!(d.token_puts(), 3, "two 503s, then a token");
    d.faults(|f| f.reset_next = 1);
    ok(&get(&t, &d, "meta-data/instance-id", &[]));
    let seen = d.seen();
    assert!(seen.iter().any(|s| s.status.is_none()), "a reset happened");
    // One GET in the first run; a reset GET and its retry in the second.
    assert_eq!(d.count("GET", "/latest/meta-data/instance-id"), 3);
    assert_eq!(counters(&t)["requests"]["other error"], 1);
}

#[test]
fn slow_imds_is_bounded_by_the_deadline() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![]);
    d.faults(|f| f.delay = Duration::from_secs(3));
    let start = Instant::now();
    let out = get(
        &t,
        &d,
        "meta-data/instance-id",
        &["--imds-deadline-ms", "600", "--imds-read-timeout-ms", "200"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
}

#[test]
fn garbage_oversized_and_redirects_are_refused_without_retrying() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![]);
    ok(&get(&t, &d, "meta-data/instance-id", &[]));
    let before = d.total();
    type Fault = (fn(&mut common::imds::Faults), &'static str);
    let table: [Fault; 3] = [
        (|f| f.garbage = true, "response is not UTF-8 text"),
        (|f| f.oversized = true, "over 65536 bytes refused"),
        (|f| f.redirect = true, "redirect refused"),
    ];
    for (fault, message) in table {
        d.faults(|f| *f = Default::default());
        d.faults(fault);
        let out = get(&t, &d, "meta-data/instance-id", &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(message), "{}", stderr(&out));
    }
    assert_eq!(
        d.total(),
        before + 3,
        "one request each, no retries, redirect not followed"
    );
    // A garbage listing is an error too, not an empty list.
    d.faults(|f| *f = Default::default());
    d.faults(|f| f.garbage = true);
    let out = get(&t, &d, "meta-data/network/interfaces/macs/", &[]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn imdsv1_only_when_configured() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![]);
    d.faults(|f| {
        f.token_status = Some(403);
        f.allow_v1 = true;
    });
    let out = get(&t, &d, "meta-data/instance-id", &[]);
    assert_eq!(out.status.code(), Some(1), "IMDSv2 only by default");
    assert_eq!(d.count("GET", "/latest/meta-data/instance-id"), 0);
    let out = get(&t, &d, "meta-data/instance-id", &["--imds-v1-fallback"]);
    ok(&out);
    let gets: Vec<_> = d.seen().into_iter().filter(|s| s.method == "GET").collect();
    assert_eq!(gets.len(), 1);
    assert!(!gets[0].had_token);
}

#[test]
fn absent_paths_are_404_not_errors_inside() {
    let t = Tree::new();
    let d = ImdsDouble::start(vec![]);
    let out = get(&t, &d, "meta-data/nope", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found (404)"));
    assert_eq!(
        d.count("GET", "/latest/meta-data/nope"),
        1,
        "404 is not retried"
    );
    let out = get(&t, &d, "../etc/passwd", &[]);
    assert_eq!(out.status.code(), Some(2));
}

// --- verdicts and the worker ------------------------------------------------

fn nitro() -> (Tree, Vec<String>) {
    let t = Tree::new();
    let devpaths = t.fleet(16);
    (t, devpaths)
}

/// IMDS flags plus the `command` backend running `script`, forked worker.
fn worker_flags(d: &ImdsDouble, script: &std::path::Path) -> Vec<String> {
    let mut flags = imds_flags(d);
    flags.extend([
        "--command".into(),
        script.display().to_string(),
        "--dispatch".into(),
        "fork".into(),
    ]);
    flags
}

fn recorder(t: &Tree) -> (std::path::PathBuf, std::path::PathBuf) {
    let script = t.scratch("recorder.sh");
    let dir = t.scratch("ran");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv | sort > \"{}/$HOTPLUG_INTERFACE\"\n",
            dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, dir)
}

fn handle_all(t: &Tree, events: &[(String, String, u32)], flags: &[String]) {
    let events: Vec<(&str, &str, u32)> = events
        .iter()
        .map(|(a, d, i)| (a.as_str(), d.as_str(), *i))
        .collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    t.handle_all(&events, &flags);
}

#[test]
fn burst_of_driver_unload_removes_makes_no_imds_request() {
    let d = ImdsDouble::start(vec![]);
    let (t, devpaths) = nitro();
    let (script, _) = recorder(&t);
    t.module_going("ena");
    for p in &devpaths {
        t.unbind(p);
    }
    let flags = worker_flags(&d, &script);
    let events: Vec<_> = (0..32)
        .map(|n| {
            (
                "remove".to_string(),
                devpaths[n % 16].clone(),
                2 + (n % 16) as u32,
            )
        })
        .collect();
    handle_all(&t, &events, &flags);
    assert_eq!(t.journal().len(), 32);
    assert!(t.journal().iter().all(|e| e["verdict"] == "driver-unload"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.total(), 0, "{:?}", d.seen());
}

#[test]
fn parallel_detaches_share_one_token_and_one_listing() {
    // 16 ENIs detached together; IMDS has already dropped them.
    let d = ImdsDouble::start(vec![Eni::new("02:ff:00:00:00:01", 0)]);
    let (t, devpaths) = nitro();
    let (script, ran) = recorder(&t);
    for p in &devpaths {
        t.hot_unplug(p);
    }
    let flags = worker_flags(&d, &script);
    let events: Vec<_> = devpaths
        .iter()
        .enumerate()
        .map(|(i, p)| ("remove".to_string(), p.clone(), 2 + i as u32))
        .collect();
    handle_all(&t, &events, &flags);
    let workers = t.worker_entries(16, 20);
    for w in &workers {
        assert_eq!(w["verdict"], "device-removed", "{w}");
        assert_eq!(w["imds"]["result"], "agreed", "{w}");
        assert_eq!(w["action_taken"]["result"], "done", "{w}");
    }
    assert_eq!(d.token_puts(), 1, "{:?}", d.seen());
    assert_eq!(d.listings(), 1, "{:?}", d.seen());
    assert_eq!(d.total(), 2);
    assert_eq!(fs::read_dir(&ran).unwrap().count(), 16);
}

#[test]
fn detach_waits_for_lagging_imds_then_reconfigures() {
    // ens5's MAC stays listed with working keys for the first 3 requests.
    let mut eni = Eni::new("02:a1:b2:c3:d4:00", 0);
    eni.vanish_after = Some(3);
    let d = ImdsDouble::start(vec![eni]);
    let (t, devpaths) = nitro();
    let (script, ran) = recorder(&t);
    t.hot_unplug(&devpaths[0]);
    let flags = worker_flags(&d, &script);
    handle_all(&t, &[("remove".into(), devpaths[0].clone(), 2)], &flags);
    assert!(!ran.join("ens3").exists(), "not before IMDS agrees");
    let w = t.worker_entries(1, 20).pop().unwrap();
    assert_eq!(w["imds"]["result"], "agreed", "{w}");
    assert_eq!(w["imds"]["attempts"], 2, "{w}");
    assert!(ran.join("ens3").exists());
}

#[test]
fn listed_mac_whose_keys_answer_404_counts_as_detached() {
    let mut eni = Eni::new("02:a1:b2:c3:d4:00", 0);
    eni.keys = false;
    let d = ImdsDouble::start(vec![eni]);
    let (t, devpaths) = nitro();
    let (script, _) = recorder(&t);
    t.hot_unplug(&devpaths[0]);
    let flags = worker_flags(&d, &script);
    handle_all(&t, &[("remove".into(), devpaths[0].clone(), 2)], &flags);
    let w = t.worker_entries(1, 20).pop().unwrap();
    assert_eq!(w["imds"]["result"], "agreed", "{w}");
    assert!(
        w["imds"]["note"]
            .as_str()
            .unwrap()
            .contains("device-number answers 404"),
        "{w}"
    );
    assert_eq!(
        d.total(),
        3,
        "token, listing, device-number: {:?}",
        d.seen()
    );
}

#[test]
fn worker_gives_up_when_imds_never_agrees() {
    let d = ImdsDouble::start(vec![Eni::new("02:a1:b2:c3:d4:00", 0)]);
    let (t, devpaths) = nitro();
    let (script, ran) = recorder(&t);
    t.hot_unplug(&devpaths[0]);
    let mut flags = worker_flags(&d, &script);
    flags.extend(["--imds-confirm-timeout-secs".into(), "2".into()]);
    handle_all(&t, &[("remove".into(), devpaths[0].clone(), 2)], &flags);
    let w = t.worker_entries(1, 20).pop().unwrap();
    assert_eq!(w["imds"]["result"], "gave-up", "{w}");
    assert_eq!(w["ok"], false);
    assert!(w["action_taken"].is_null());
    assert!(!ran.join("ens3").exists());
}

#[test]
fn unreachable_imds_never_blocks_the_hook() {
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    t.hot_unplug(&ens5);
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (script, _) = recorder(&t);
    let start = Instant::now();
    ok(&t.udev(
        "remove",
        &ens5,
        2,
        "ena",
        &[
            "--imds",
            "--imds-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--imds-confirm-timeout-secs",
            "2",
            "--command",
            script.to_str().unwrap(),
            "--dispatch",
            "fork",
        ],
    ));
    assert!(start.elapsed() < Duration::from_millis(500));
    let w = t.worker_entries(1, 20).pop().unwrap();
    assert_eq!(w["imds"]["result"], "gave-up", "{w}");
    assert!(
        w["imds"]["note"]
            .as_str()
            .unwrap()
            .contains("connection failed"),
        "{w}"
    );
}

#[test]
fn new_device_is_confirmed_and_its_metadata_passed_on() {
    let d = ImdsDouble::start(vec![Eni::new(MAC5, 1)]);
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    let (script, ran) = recorder(&t);
    let flags = worker_flags(&d, &script);
    handle_all(&t, &[("add".into(), ens5, 2)], &flags);
    let w = t.worker_entries(1, 20).pop().unwrap();
    assert_eq!(w["verdict"], "new-device");
    let env = fs::read_to_string(ran.join("ens5")).unwrap();
    assert!(env.contains("HOTPLUG_DEVICE_NUMBER=1\n"), "{env}");
    assert!(env.contains("HOTPLUG_NETWORK_CARD_INDEX=0\n"), "{env}");
    assert!(
        env.contains("HOTPLUG_INTERFACE_ID=eni-00000000000000001\n"),
        "{env}"
    );
    assert_eq!(
        d.listings(),
        0,
        "attach checks per-MAC keys, not the listing"
    );
    assert_eq!(d.total(), 4, "token + 3 keys: {:?}", d.seen());
}

#[test]
fn new_device_appearing_late_in_imds_is_waited_for() {
    let mut eni = Eni::new(MAC5, 1);
    eni.appear_after = Some(2);
    let d = ImdsDouble::start(vec![eni]);
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    let (script, ran) = recorder(&t);
    let flags = worker_flags(&d, &script);
    handle_all(&t, &[("add".into(), ens5, 2)], &flags);
    let w = t.worker_entries(1, 20).pop().unwrap();
    assert_eq!(w["imds"]["result"], "agreed", "{w}");
    assert_eq!(w["imds"]["attempts"], 2, "{w}");
    assert!(ran.join("ens5").exists());
}

#[test]
fn classify_shows_requests_and_cache_use() {
    let d = ImdsDouble::start(vec![]);
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    t.hot_unplug(&ens5);
    let flags = imds_flags(&d);
    let run = || {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend([
            "classify",
            "--json",
            "--action",
            "remove",
            "--devpath",
            &ens5,
        ]);
        let out = t.run(&args, &[]);
        ok(&out);
        serde_json::from_str::<Value>(&stdout(&out)).unwrap()
    };
    let v = run();
    assert_eq!(v["verdict"], "device-removed");
    assert_eq!(v["imds"]["presence"]["state"], "detached");
    let reqs = v["imds"]["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0]["method"], "PUT");
    assert_eq!(reqs[0]["path"], TOKEN_PATH);
    assert_eq!(reqs[0]["status"], 200);
    assert_eq!(reqs[0]["cached"], false);
    assert!(reqs[0]["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(reqs[1]["path"], MACS);
    assert!(v["reasons"].to_string().contains("IMDS agrees"));
    let v = run();
    let reqs = v["imds"]["requests"].as_array().unwrap();
    assert!(reqs.iter().all(|r| r["cached"] == true), "{reqs:?}");
    assert_eq!(d.total(), 2);
}

#[test]
fn settle_timeout_uses_imds_as_a_tie_breaker_in_classify() {
    let d = ImdsDouble::start(vec![Eni::new(MAC6, 1)]);
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    let ens6 = t.ena(6, "ens6", MAC6, 3, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    t.unbind(&ens5);
    t.unbind(&ens6);
    let flags = imds_flags(&d);
    let classify = |devpath: &str| {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend([
            "--settle-ms",
            "30",
            "classify",
            "--json",
            "--action",
            "remove",
            "--devpath",
            devpath,
        ]);
        let out = t.run(&args, &[]);
        ok(&out);
        serde_json::from_str::<Value>(&stdout(&out)).unwrap()
    };
    // ens5's MAC is gone from IMDS: removed after all.
    let v = classify(&ens5);
    assert_eq!(v["verdict"], "device-removed", "{v}");
    // ens6's is attached: a plain unbind.
    let v = classify(&ens6);
    assert_eq!(v["verdict"], "driver-unbind", "{v}");
}

#[test]
fn handle_never_calls_imds_itself() {
    let d = ImdsDouble::start(vec![Eni::new(MAC5, 0)]);
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    t.hot_unplug(&ens5);
    // cloud-init backend, IMDS on, on a systemd host whose systemctl only
    // records the call: whatever happens, it happens in the worker unit.
    let fifo = t.scratch("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let calls = t.scratch("calls");
    let (path, systemd) = t.fake_systemd(&format!("echo \"$@\" >> {}", calls.display()));
    let mut flags = imds_flags(&d);
    flags.extend([
        "--backend".into(),
        "cloud-init".into(),
        "--cloud-init-fifo".into(),
        fifo.display().to_string(),
        systemd[0].clone(),
        systemd[1].clone(),
        "--cloud-init-forward-remove".into(),
    ]);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    ok(&t
        .udev_command("remove", &ens5, 2, "ena", &args, &[("PATH", &path)])
        .output()
        .unwrap());
    assert_eq!(
        d.total(),
        0,
        "handle itself made IMDS requests: {:?}",
        d.seen()
    );
    let e = t
        .journal()
        .into_iter()
        .find(|e| e["kind"] == "event")
        .unwrap();
    assert_eq!(e["verdict"], "device-removed");
    assert_eq!(e["action_taken"]["result"], "dispatched", "{e}");
    let call = fs::read_to_string(&calls).unwrap();
    assert!(
        call.starts_with("start --no-block hotplug-hook-worker@"),
        "{call}"
    );
    // The job asks the worker to confirm the detach in IMDS first.
    let job = t.only_job();
    let job: Value = serde_json::from_str(&fs::read_to_string(job).unwrap()).unwrap();
    assert_eq!(job["confirm"], "detach");
    assert_eq!(job["mac"], MAC5);
    assert_eq!(job["backend"], "cloud-init");
    assert!(
        job.get("config").is_none(),
        "a job carries no settings: {job}"
    );
}

/// What IMDS says reaches the command's environment only when it is what
/// IMDS sends: a small `device-number` and `network-card-index`, an
/// `interface-id` of `eni-` and hex. Anything else never gets there.
#[test]
fn imds_values_are_validated_before_they_reach_the_command() {
    let huge = "9".repeat(4000);
    for (number, card, id) in [
        ("1; rm -rf /", "0", "eni-0123abcd"),
        (huge.as_str(), "0", "eni-0123abcd"),
        ("1", "0; reboot", "eni-../../x"),
        ("1", &huge, "$(id)"),
    ] {
        let mut eni = Eni::new(MAC5, 1);
        eni.raw = vec![
            ("device-number".into(), number.into()),
            ("network-card-index".into(), card.into()),
            ("interface-id".into(), id.into()),
        ];
        let d = ImdsDouble::start(vec![eni]);
        let t = Tree::new();
        let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
        let (script, ran) = recorder(&t);
        let mut flags = worker_flags(&d, &script);
        flags.extend(["--imds-confirm-timeout-secs".into(), "1".into()]);
        handle_all(&t, &[("add".into(), ens5, 2)], &flags);
        let w = t.worker_entries(1, 20).pop().unwrap();
        let env = fs::read_to_string(ran.join("ens5")).unwrap_or_default();
        for bad in [number, card, id] {
            if !["0", "1"].contains(&bad) {
                assert!(!env.contains(bad), "{bad:?} reached the command: {env}");
            }
        }
        if number == "1" {
            // A valid device-number: confirmed; the bad optional keys dropped.
            assert_eq!(w["imds"]["result"], "agreed", "{w}");
            assert!(env.contains("HOTPLUG_DEVICE_NUMBER=1\n"), "{env}");
            assert!(!env.contains("HOTPLUG_NETWORK_CARD_INDEX"), "{env}");
            assert!(!env.contains("HOTPLUG_INTERFACE_ID"), "{env}");
        } else {
            // Nothing to confirm with: the command never runs.
            assert_eq!(w["imds"]["result"], "gave-up", "{w}");
            assert!(env.is_empty(), "{env}");
            let note = w["imds"]["note"].as_str().unwrap();
            assert!(note.contains("not a small integer"), "{w}");
            assert!(note.len() < 400, "the value is quoted short: {note}");
        }
    }
}
