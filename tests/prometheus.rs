//! The shipped Prometheus rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`), and the textfile the real binary writes
//! passes `promtool check metrics` and carries the IMDS latency histogram by
//! outcome. promtool comes with Debian's `prometheus` package; without it
//! these tests are skipped with a message, except in CI (`CI=true`), which
//! installs it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::imds::{Eni, ImdsDouble};
use common::{Tree, ok, stderr, stdout};

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus")
}

/// promtool's path, or None (skipped, with a message) when it is missing
/// outside CI.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "promtool is missing in CI: .ci/run installs it (apt-get install prometheus)"
        );
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
    }
    found
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn rules_pass_promtool_check() {
    let Some(promtool) = promtool() else { return };
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(contrib().join("hotplug-hook.rules.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("SUCCESS: 5 rules found"),
        "{}",
        text(&out)
    );
}

#[test]
fn rules_pass_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let out = Command::new(promtool)
        .args(["test", "rules", "hotplug-hook.rules.test.yml"])
        .current_dir(contrib())
        .output()
        .unwrap();
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
}

/// Every alert of the rule file has a unit test that expects it to fire.
#[test]
fn every_alert_has_a_firing_test() {
    let rules = fs::read_to_string(contrib().join("hotplug-hook.rules.yml")).unwrap();
    let tests = fs::read_to_string(contrib().join("hotplug-hook.rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {a}\n        exp_alerts:\n          - exp_labels"
            )),
            "no test expects {a} to fire"
        );
        assert!(
            tests.contains(&format!("alertname: {a}, exp_alerts: []")),
            "no test expects {a} to stay silent"
        );
    }
}

/// `name{labels}` → value, for the samples of a Prometheus text file.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, v) = l.rsplit_once(' ').unwrap();
            (series.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn get(t: &Tree, d: &ImdsDouble, prom: &Path, path: &str, extra: &[&str]) -> Output {
    let ep = d.endpoint();
    let mut args = vec![
        "--metrics-file",
        prom.to_str().unwrap(),
        "--imds",
        "--imds-endpoint",
        ep.as_str(),
        "--imds-deadline-ms",
        "3000",
    ];
    args.extend_from_slice(extra);
    args.extend(["imds", "get", path]);
    t.run(&args, &[])
}

#[test]
fn textfile_passes_promtool_and_has_the_histogram_by_outcome() {
    let d = ImdsDouble::start(vec![Eni::new("02:a1:b2:c3:d4:05", 0)]);
    let t = Tree::new();
    let prom = t.scratch("textfile/hotplug_hook.prom");
    fs::create_dir_all(prom.parent().unwrap()).unwrap();

    // ok: a token PUT and a GET, both 200.
    let out = get(&t, &d, &prom, "meta-data/instance-id", &[]);
    ok(&out);
    assert_eq!(stdout(&out), "i-0123456789abcdef0\n");
    // absent: 404 (the command fails, the request is counted).
    let out = get(&t, &d, &prom, "meta-data/no-such-key", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // throttled: one 429, retried, then 200.
    d.faults(|f| {
        f.status = Some(429);
        f.status_count = Some(1);
    });
    ok(&get(&t, &d, &prom, "meta-data/instance-id", &[]));
    // timeout: the double answers after the read timeout; no retry. The
    // delay only has to exceed the timeout, however slow the machine.
    d.faults(|f| f.delay = Duration::from_millis(1500));
    let out = get(
        &t,
        &d,
        &prom,
        "meta-data/instance-id",
        &["--imds-read-timeout-ms", "100", "--imds-retries", "0"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    d.faults(|f| f.delay = Duration::ZERO);

    let body = fs::read_to_string(&prom).unwrap();
    let m = samples(&body);
    let h = "hotplug_hook_imds_request_duration_seconds";
    assert!(
        body.contains(&format!("# TYPE {h} histogram\n")),
        "no histogram in\n{body}"
    );
    assert!(!body.contains(" summary\n"), "{body}");
    // token PUT + GET, the 404, the 429's retry.
    assert_eq!(m[&format!("{h}_count{{outcome=\"ok\"}}")], 3.0, "{body}");
    assert_eq!(
        m[&format!("{h}_count{{outcome=\"absent\"}}")],
        1.0,
        "{body}"
    );
    assert_eq!(
        m[&format!("{h}_count{{outcome=\"throttled\"}}")],
        1.0,
        "{body}"
    );
    assert_eq!(
        m[&format!("{h}_count{{outcome=\"timeout\"}}")],
        1.0,
        "{body}"
    );
    assert_eq!(m[&format!("{h}_count{{outcome=\"error\"}}")], 0.0, "{body}");
    for outcome in ["ok", "absent", "throttled", "error", "timeout"] {
        let les: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{h}_bucket{{outcome=\"{outcome}\",le=\"")))
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        assert_eq!(
            les,
            [
                "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
                "2.5", "5", "+Inf"
            ],
            "{outcome}"
        );
        assert_eq!(
            m[&format!("{h}_bucket{{outcome=\"{outcome}\",le=\"+Inf\"}}")],
            m[&format!("{h}_count{{outcome=\"{outcome}\"}}")]
        );
    }
    assert_eq!(m["hotplug_hook_imds_throttled_total"], 1.0);
    assert_eq!(m["hotplug_hook_imds_retries_total"], 1.0);
    assert_eq!(m["hotplug_hook_imds_token_fetches_total"], 1.0);
    assert_eq!(m["hotplug_hook_imds_cache_hits_total{kind=\"token\"}"], 3.0);
    assert_eq!(
        m["hotplug_hook_imds_requests_total{kind=\"other\",status=\"429\"}"],
        1.0
    );
    assert_eq!(
        m["hotplug_hook_imds_requests_total{kind=\"other\",status=\"404\"}"],
        1.0
    );
    assert_eq!(
        m["hotplug_hook_imds_requests_total{kind=\"other\",status=\"error\"}"],
        1.0
    );
    assert_eq!(m["hotplug_hook_stranded_jobs_total"], 0.0);

    // status --json gives the same figures.
    let out = t.run(&["status", "--json"], &[]);
    ok(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let lat = &v["imds_latency"];
    assert_eq!(lat["le"].as_array().unwrap().len(), 13);
    assert_eq!(lat["le"][12], "+Inf");
    assert_eq!(lat["count"], 6);
    assert_eq!(lat["by_outcome"]["ok"]["count"], 3);
    assert_eq!(lat["by_outcome"]["timeout"]["cumulative"][12], 1);
    assert!(lat["p99_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(v["metrics"]["imds"]["throttled"], 1);
    assert_eq!(v["metrics"]["imds"]["latency"]["absent"]["count"], 1);
    let out = t.run(&["status"], &[]);
    let human = stdout(&out);
    assert!(
        human.contains("IMDS latency histogram: p50 ~")
            && human.contains("ok 3, absent 1, throttled 1, error 0, timeout 1"),
        "{human}"
    );

    let Some(promtool) = promtool() else { return };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "promtool check metrics:\n{}\n{body}",
        text(&out)
    );
}
