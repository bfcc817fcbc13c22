//! What operators see: journal and syslog lines with structured fields,
//! the Prometheus textfile, `status`, and no IMDS token anywhere in logs.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::imds::{Eni, ImdsDouble};
use common::{ModKind, Tree, ok, stderr, stdout};

const MAC5: &str = "02:a1:b2:c3:d4:05";

fn socket(t: &Tree, name: &str) -> (UnixDatagram, String) {
    let path = t.scratch(name);
    let s = UnixDatagram::bind(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (s, path.display().to_string())
}

fn recv_all(s: &UnixDatagram) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while let Ok(n) = s.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

fn fields(datagram: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(datagram)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn journal_gets_one_line_with_structured_fields() {
    let (t, ens5) = Tree::mid_unload();
    let (sock, path) = socket(&t, "journal.sock");
    let out = t.udev(
        "remove",
        &ens5,
        2,
        "ena",
        &["--log", "journal", "--journal-socket", &path],
    );
    ok(&out);
    assert_eq!(
        stderr(&out),
        "",
        "nothing on stderr when the journal takes it"
    );
    let got = recv_all(&sock);
    assert_eq!(got.len(), 1, "one line per event");
    let f = fields(&got[0]);
    assert_eq!(f["SYSLOG_IDENTIFIER"], "hotplug-hook");
    assert_eq!(f["PRIORITY"], "6");
    assert_eq!(f["INTERFACE"], "ens5");
    assert_eq!(f["ACTION"], "remove");
    assert_eq!(f["VERDICT"], "driver-unload");
    assert_eq!(f["MAC"], MAC5);
    assert_eq!(f["SEQNUM"], "1234");
    assert!(f["DURATION_MS"].parse::<f64>().unwrap() > 0.0);
    assert!(
        f["MESSAGE"].starts_with("ens5 remove: driver-unload"),
        "{}",
        f["MESSAGE"]
    );
}

#[test]
fn syslog_gets_a_daemon_facility_line() {
    let (t, ens5) = Tree::mid_unload();
    let (sock, path) = socket(&t, "log.sock");
    ok(&t.udev(
        "remove",
        &ens5,
        2,
        "ena",
        &["--log", "syslog", "--syslog-socket", &path],
    ));
    let got = recv_all(&sock);
    assert_eq!(got.len(), 1);
    let line = String::from_utf8(got[0].clone()).unwrap();
    assert!(line.starts_with("<30>hotplug-hook["), "{line}");
    assert!(line.contains("]: ens5 remove: driver-unload"), "{line}");
}

#[test]
fn missing_socket_falls_back_to_stderr() {
    let (t, ens5) = Tree::mid_unload();
    let out = t.udev(
        "remove",
        &ens5,
        2,
        "ena",
        &[
            "--log",
            "journal",
            "--journal-socket",
            "/nonexistent/socket",
        ],
    );
    assert!(ok(&out).contains("ens5 remove: driver-unload"));
    // auto with neither socket: stderr.
    let out = t.udev(
        "remove",
        &ens5,
        2,
        "ena",
        &[
            "--log",
            "auto",
            "--journal-socket",
            "/nonexistent/j",
            "--syslog-socket",
            "/nonexistent/s",
        ],
    );
    assert!(ok(&out).contains("ens5 remove: driver-unload"));
}

#[test]
fn no_log_line_ever_contains_the_imds_token() {
    let d = ImdsDouble::start(vec![Eni::new(MAC5, 0)]);
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    t.hot_unplug(&ens5);
    let (sock, path) = socket(&t, "journal.sock");
    let ep = d.endpoint();
    let common = [
        "-v",
        "--imds",
        "--imds-endpoint",
        ep.as_str(),
        "--log",
        "journal",
        "--journal-socket",
        path.as_str(),
    ];
    let mut logs = Vec::new();
    // A token fetch, a 401 and re-fetch, garbage, a classify and a worker.
    let mut args = common.to_vec();
    args.extend(["imds", "get", "meta-data/instance-id"]);
    logs.push(stderr(&t.run(&args, &[])));
    let token1 = fs::read_to_string(t.state.join("imds-token.json")).unwrap();
    d.faults(|f| f.unauthorized_next = 1);
    logs.push(stderr(&t.run(&args, &[])));
    let token2 = fs::read_to_string(t.state.join("imds-token.json")).unwrap();
    d.faults(|f| f.garbage = true);
    logs.push(stderr(&t.run(&args, &[])));
    d.faults(|f| f.garbage = false);
    let mut args = common.to_vec();
    args.extend([
        "--dispatch",
        "fork",
        "--command",
        "/bin/true",
        "--imds-confirm-timeout-secs",
        "1",
        "handle",
    ]);
    let env = Tree::udev_env("remove", &ens5, 2, "ena");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    logs.push(stderr(&t.run(&args, &env)));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !t.journal().iter().any(|e| e["kind"] == "worker") {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never finished: {logs:?} {:?}",
            t.journal()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let datagrams = recv_all(&sock);
    assert!(datagrams.len() >= 4, "{} datagrams", datagrams.len());
    for token_file in [token1, token2] {
        let v: serde_json::Value = serde_json::from_str(&token_file).unwrap();
        let token = v["token"].as_str().unwrap();
        for l in &logs {
            assert!(!l.contains(token), "token in stderr: {l}");
        }
        for d in &datagrams {
            assert!(
                !String::from_utf8_lossy(d).contains(token),
                "token in the journal"
            );
        }
        assert!(
            !fs::read_to_string(t.state.join("journal.jsonl"))
                .unwrap()
                .contains(token)
        );
    }
}

/// `name{labels} value` lines, each family with HELP and TYPE first.
fn parse_prom(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "histogram", "summary", "gauge"].contains(&kind),
                "{line}"
            );
            assert!(name.starts_with("hotplug_hook_"), "{line}");
            typed.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            typed.iter().any(|t| name == t
                || name
                    .strip_prefix(t.as_str())
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
            "{name} has no TYPE before it"
        );
        if name.ends_with("_total") || name.contains("_seconds") || name.ends_with("_info") {
            // Prometheus naming: counters end in _total, durations in
            // seconds, info gauges (always 1, facts as labels) in _info.
        } else {
            panic!("unconventional metric name {name}");
        }
        samples.insert(series.to_string(), value.parse::<f64>().unwrap());
    }
    samples
}

#[test]
fn metrics_file_counts_events_actions_and_imds() {
    let d = ImdsDouble::start(vec![Eni::new("02:ff:00:00:00:01", 0)]);
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", MAC5, 2, ModKind::Loadable);
    let ens6 = t.ena(6, "ens6", "02:a1:b2:c3:d4:06", 3, ModKind::Loadable);
    ok(&t.run(&["scan"], &[]));
    let prom = t.scratch("textfile/hotplug_hook.prom");
    fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let ep = d.endpoint();
    let flags = [
        "--metrics-file",
        prom.to_str().unwrap(),
        "--imds",
        "--imds-endpoint",
        ep.as_str(),
        "--command",
        "/bin/true",
        "--dispatch",
        "fork",
    ];
    t.module_going("ena");
    t.unbind(&ens5);
    ok(&t.udev("remove", &ens5, 2, "ena", &flags));
    ok(&t.udev("remove", &ens5, 2, "ena", &flags));
    t.hot_unplug(&ens6);
    ok(&t.udev("remove", &ens6, 3, "ena", &flags));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !t.journal().iter().any(|e| e["kind"] == "worker") {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = parse_prom(&fs::read_to_string(&prom).unwrap());
    assert_eq!(
        m["hotplug_hook_events_total{action=\"remove\",verdict=\"driver-unload\"}"],
        2.0
    );
    assert_eq!(
        m["hotplug_hook_events_total{action=\"remove\",verdict=\"device-removed\"}"],
        1.0
    );
    assert_eq!(m["hotplug_hook_decision_duration_seconds_count"], 3.0);
    assert_eq!(
        m["hotplug_hook_decision_duration_seconds_bucket{le=\"+Inf\"}"],
        3.0
    );
    assert!(m["hotplug_hook_decision_duration_seconds_sum"] > 0.0);
    assert_eq!(
        m["hotplug_hook_reconfigurations_total{backend=\"command\",result=\"dispatched\"}"],
        1.0
    );
    assert_eq!(
        m["hotplug_hook_reconfigurations_total{backend=\"command\",result=\"done\"}"],
        1.0
    );
    assert_eq!(m["hotplug_hook_worker_runs_total{result=\"agreed\"}"], 1.0);
    assert_eq!(
        m["hotplug_hook_imds_requests_total{kind=\"token\",status=\"200\"}"],
        1.0
    );
    assert_eq!(
        m["hotplug_hook_imds_requests_total{kind=\"macs\",status=\"200\"}"],
        1.0
    );
    assert_eq!(
        m["hotplug_hook_imds_request_duration_seconds_count{outcome=\"ok\"}"],
        2.0
    );
    assert_eq!(m["hotplug_hook_imds_token_fetches_total"], 1.0);
    assert_eq!(m["hotplug_hook_imds_retries_total"], 0.0);
    assert_eq!(d.total(), 2);
    // No temp files left beside it (atomic replace).
    let names: Vec<_> = fs::read_dir(prom.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("hotplug_hook.prom")]);

    // status shows the same figures.
    let out = t.run(&["status"], &[]);
    let text = stdout(&ok_out(out));
    assert!(text.contains("     2  remove driver-unload"), "{text}");
    assert!(text.contains("     1  token 200"), "{text}");
    let out = t.run(&["status", "--json", "-n", "2"], &[]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&ok_out(out))).unwrap();
    assert_eq!(v["metrics"]["events"]["remove driver-unload"], 2);
    assert_eq!(v["journal"].as_array().unwrap().len(), 2);
}

fn ok_out(o: std::process::Output) -> std::process::Output {
    ok(&o);
    o
}

#[test]
fn a_stuck_log_daemon_never_blocks_the_hook() {
    let (t, ens5) = Tree::mid_unload();
    let (_sock, path) = socket(&t, "journal.sock");
    // Fill the socket's queue, as a journald that stopped reading would.
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    while filler.send_to(b"MESSAGE=filler\n", &path).is_ok() {}
    let start = std::time::Instant::now();
    let out = t.udev(
        "remove",
        &ens5,
        2,
        "ena",
        &["--log", "journal", "--journal-socket", &path],
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        ok(&out).contains("ens5 remove: driver-unload"),
        "fell back to stderr"
    );
}

/// Logging starts before the configuration is loaded: under udev (stderr
/// goes nowhere) a broken config file still reaches the journal or syslog,
/// and the hook exits 2.
#[test]
fn a_broken_config_is_logged_to_the_journal_and_syslog() {
    let (t, ens5) = Tree::mid_unload();
    let bad = t.scratch("broken.json");
    fs::write(&bad, r#"{"settle_ms": "soon"}"#).unwrap();
    let (sock, path) = socket(&t, "journal.sock");
    let out = t.udev(
        "remove",
        &ens5,
        2,
        "ena",
        &[
            "--config",
            bad.to_str().unwrap(),
            "--log",
            "journal",
            "--journal-socket",
            &path,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let got = recv_all(&sock);
    assert_eq!(got.len(), 1, "{got:?}");
    let f = fields(&got[0]);
    assert!(
        f["MESSAGE"].contains("invalid config") && f["MESSAGE"].contains("settle_ms"),
        "{f:?}"
    );
    assert_eq!(f["PRIORITY"], "3");
    assert_eq!(f["SYSLOG_IDENTIFIER"], "hotplug-hook");

    // Not JSON at all, to syslog.
    fs::write(&bad, "{ not json").unwrap();
    let (sock, path) = socket(&t, "syslog.sock");
    let out = t.udev(
        "remove",
        &ens5,
        2,
        "ena",
        &[
            "--config",
            bad.to_str().unwrap(),
            "--log",
            "syslog",
            "--syslog-socket",
            &path,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let got = recv_all(&sock);
    assert_eq!(got.len(), 1, "{got:?}");
    let line = String::from_utf8_lossy(&got[0]);
    assert!(line.starts_with("<27>hotplug-hook["), "{line}");
    assert!(line.contains("not valid JSON"), "{line}");
    assert!(
        t.journal().is_empty(),
        "nothing handled with a broken config"
    );
}
