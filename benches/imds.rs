//! `cargo bench --bench imds`: what IMDS confirmation costs, against the
//! IMDS double on loopback (1 ms added latency per request). Prints wall
//! times and request counts; asserts nothing.
//!
//! - a confirmed detach: `handle` in udev context (dispatches the job), then
//!   the worker confirming in IMDS, with a cold and with a warm token cache;
//! - a burst of 32 driver-unload removes (16 NICs, reloaded twice);
//! - 16 ENIs detached at once, all confirmed by their workers;
//! - one detach check when IMDS is slow (200 ms), throttling (429) or down,
//!   and a worker's whole confirmation budget against a throttling IMDS.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::imds::{Eni, ImdsDouble};
use common::{ModKind, Tree};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn flags(d: &ImdsDouble, extra: &[&str]) -> Vec<String> {
    let mut f: Vec<String> = [
        "--imds",
        "--imds-endpoint",
        &d.endpoint(),
        "--command",
        "/bin/true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    f.extend(extra.iter().map(|s| s.to_string()));
    f
}

fn handle(
    t: &Tree,
    flags: &[String],
    action: &str,
    devpath: &str,
    ifindex: u32,
    env_extra: &[(&str, &str)],
) -> Command {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut c = t.udev_command(action, devpath, ifindex, "ena", &flags, env_extra);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn peak_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct we pass.
    unsafe {
        let mut ru: nix::libc::rusage = std::mem::zeroed();
        nix::libc::getrusage(nix::libc::RUSAGE_CHILDREN, &mut ru);
        ru.ru_maxrss
    }
}

fn workers_done(t: &Tree, n: usize) -> bool {
    t.journal().iter().filter(|e| e["kind"] == "worker").count() >= n
}

fn main() {
    if std::env::var_os("TMPDIR").is_none() && std::path::Path::new("/dev/shm").is_dir() {
        // SAFETY: single-threaded at this point.
        unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);

    // --- one confirmed detach, handle + worker, cold and warm token -------
    println!("confirmed detach (IMDS double, 1 ms per request), median of {runs}:");
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>14}",
        "token", "handle ms", "worker ms", "total ms", "IMDS requests"
    );
    for warm in [false, true] {
        let mut h = Vec::new();
        let mut w = Vec::new();
        let mut requests = Vec::new();
        for _ in 0..runs {
            let d = ImdsDouble::start(vec![Eni::new("02:ff:00:00:00:01", 0)]);
            d.faults(|f| f.delay = Duration::from_millis(1));
            let t = Tree::new();
            let ens5 = t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable);
            t.run(&["scan"], &[]);
            t.hot_unplug(&ens5);
            // A systemd host whose systemctl does nothing: the job stays for
            // us to run the worker by hand and time it alone.
            let (path, systemd) = t.fake_systemd("exit 0");
            let f = flags(&d, &[systemd[0].as_str(), systemd[1].as_str()]);
            if warm {
                let mut a: Vec<&str> = f.iter().map(String::as_str).collect();
                a.extend(["imds", "get", "meta-data/instance-id"]);
                t.run(&a, &[]);
            }
            let before = d.total();
            let start = Instant::now();
            handle(&t, &f, "remove", &ens5, 2, &[("PATH", &path)])
                .status()
                .unwrap();
            h.push(start.elapsed());
            let job = t.only_job();
            let start = Instant::now();
            // The worker takes its settings from root's configuration (the
            // same flags the hook had), never from the job.
            let mut a: Vec<&str> = f.iter().map(String::as_str).collect();
            a.extend(["worker", "--job", job.to_str().unwrap()]);
            t.command(&a, &[]).stderr(Stdio::null()).status().unwrap();
            w.push(start.elapsed());
            requests.push(d.total() - before);
        }
        let (h, w) = (median(h), median(w));
        println!(
            "{:<12} {:>10.2} {:>10.2} {:>10.2} {:>14}",
            if warm { "warm" } else { "cold" },
            ms(h),
            ms(w),
            ms(h + w),
            format!(
                "{}..{}",
                requests.iter().min().unwrap(),
                requests.iter().max().unwrap()
            )
        );
    }

    // --- 32-event burst: a driver reload of 16 NICs, twice ------------------
    let d = ImdsDouble::start(vec![]);
    d.faults(|f| f.delay = Duration::from_millis(1));
    let t = Tree::new();
    let devpaths = t.fleet(16);
    t.module_going("ena");
    for p in &devpaths {
        t.unbind(p);
    }
    let f = flags(&d, &["--dispatch", "fork"]);
    let start = Instant::now();
    let children: Vec<_> = (0..32)
        .map(|n| {
            handle(
                &t,
                &f,
                "remove",
                &devpaths[n % 16],
                2 + (n % 16) as u32,
                &[],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    for mut c in children {
        c.wait().unwrap();
    }
    let burst = start.elapsed();
    println!(
        "\n32 concurrent driver-unload removes: {:.1} ms wall, {} IMDS requests",
        ms(burst),
        d.total()
    );

    // --- 16 ENIs detached at once --------------------------------------------
    let d = ImdsDouble::start(vec![Eni::new("02:ff:00:00:00:01", 0)]);
    d.faults(|f| f.delay = Duration::from_millis(1));
    let t = Tree::new();
    let devpaths = t.fleet(16);
    for p in &devpaths {
        t.hot_unplug(p);
    }
    let f = flags(&d, &["--dispatch", "fork"]);
    let start = Instant::now();
    let children: Vec<_> = (0..16)
        .map(|n| {
            handle(&t, &f, "remove", &devpaths[n], 2 + n as u32, &[])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        c.wait().unwrap();
    }
    let handled = start.elapsed();
    while !workers_done(&t, 16) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "workers did not finish"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let confirmed = start.elapsed();
    println!(
        "16 concurrent ENI detaches: all handled in {:.1} ms, all confirmed and reconfigured in {:.1} ms; \
         IMDS requests: {} ({} token PUT, {} listing)",
        ms(handled),
        ms(confirmed),
        d.total(),
        d.token_puts(),
        d.listings()
    );

    println!(
        "peak RSS of any hook or worker run so far: {} KiB",
        peak_rss_kib()
    );

    // --- IMDS under faults ---------------------------------------------------
    println!("\none detach check (classify, one client: 3 s deadline, 3 retries):");
    println!(
        "{:<26} {:>10} {:>14}  outcome",
        "IMDS", "wall ms", "IMDS requests"
    );
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    type Fault = (&'static str, fn(&mut common::imds::Faults));
    let faults: [Fault; 4] = [
        ("healthy (1 ms)", |f| f.delay = Duration::from_millis(1)),
        ("slow (200 ms)", |f| f.delay = Duration::from_millis(200)),
        ("throttling (429)", |f| f.status = Some(429)),
        ("down (connection refused)", |_| {}),
    ];
    for (name, fault) in faults {
        let d = ImdsDouble::start(vec![Eni::new("02:ff:00:00:00:01", 0)]);
        d.faults(fault);
        let endpoint = if name.starts_with("down") {
            format!("http://127.0.0.1:{closed_port}")
        } else {
            d.endpoint()
        };
        let t = Tree::new();
        let ens5 = t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable);
        t.run(&["scan"], &[]);
        t.hot_unplug(&ens5);
        let start = Instant::now();
        let out = t.run(
            &[
                "--imds",
                "--imds-endpoint",
                &endpoint,
                "classify",
                "--json",
                "--action",
                "remove",
                "--devpath",
                &ens5,
            ],
            &[],
        );
        let took = start.elapsed();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let requests = v["imds"]["requests"].as_array().map_or(0, |r| r.len());
        let presence = v["imds"]["presence"]["state"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        println!(
            "{:<26} {:>10.1} {:>14}  {} (verdict {})",
            name,
            ms(took),
            requests,
            presence,
            v["verdict"].as_str().unwrap_or("?")
        );
    }

    // A worker against an IMDS that throttles for ever: bounded requests.
    let d = ImdsDouble::start(vec![]);
    d.faults(|f| f.status = Some(429));
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable);
    t.run(&["scan"], &[]);
    t.hot_unplug(&ens5);
    let f = flags(
        &d,
        &["--dispatch", "fork", "--imds-confirm-timeout-secs", "20"],
    );
    let start = Instant::now();
    handle(&t, &f, "remove", &ens5, 2, &[]).status().unwrap();
    let handled = start.elapsed();
    while !workers_done(&t, 1) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "worker did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let w = t
        .journal()
        .into_iter()
        .find(|e| e["kind"] == "worker")
        .unwrap();
    println!(
        "\nworker vs. an IMDS throttling for ever (confirm timeout 20 s): handle {:.1} ms; worker gave up after \
         {:.1} s, {} attempts, {} IMDS requests ({})",
        ms(handled),
        start.elapsed().as_secs_f64(),
        w["imds"]["attempts"],
        d.total(),
        w["imds"]["result"].as_str().unwrap_or("?")
    );
}
