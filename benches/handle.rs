//! `cargo bench`: wall time of one `hotplug-hook handle` invocation per
//! verdict, on the test fixtures, spawned the way udev spawns it. Prints
//! figures; asserts nothing. Compare ratios (against spawning /bin/true in
//! the same run), not absolute numbers, on a shared machine.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ModKind, Tree};

fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

struct Stats {
    median: Duration,
    p95: Duration,
    min: Duration,
    /// Largest peak RSS of any run, from wait4(2).
    rss_kib: i64,
}

fn stats(mut v: Vec<Duration>, rss_kib: i64) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p95: at(0.95),
        min: v[0],
        rss_kib,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Spawns, waits with wait4(2): exit status and that child's peak RSS.
// The child is reaped by wait4, which std cannot see.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (bool, i64) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut status = 0;
    // SAFETY: wait4 on our own child, filling locals we own.
    let ru = unsafe {
        let mut ru: nix::libc::rusage = std::mem::zeroed();
        let pid = nix::libc::wait4(child.id() as i32, &mut status, 0, &mut ru);
        assert_eq!(pid, child.id() as i32, "wait4");
        ru
    };
    let ok = nix::libc::WIFEXITED(status) && nix::libc::WEXITSTATUS(status) == 0;
    (ok, ru.ru_maxrss)
}

/// Times `n` runs of a command built by `make`, calling `reset` before each.
fn time(n: usize, mut make: impl FnMut() -> Command, mut reset: impl FnMut()) -> Stats {
    let mut samples = Vec::with_capacity(n);
    let mut rss = 0;
    for _ in 0..n {
        reset();
        let mut cmd = make();
        let start = Instant::now();
        let (ok, r) = run_measured(&mut cmd);
        samples.push(start.elapsed());
        assert!(ok, "{cmd:?} failed");
        rss = rss.max(r);
    }
    stats(samples, rss)
}

fn udev_cmd(t: &Tree, action: &str, devpath: &str, ifindex: u32, driver: &str) -> Command {
    t.udev_command(action, devpath, ifindex, driver, &[], &[])
}

fn main() {
    // The state dir lives on tmpfs (/run) in production; put the trees on
    // tmpfs too unless told otherwise.
    if std::env::var_os("TMPDIR").is_none() && std::path::Path::new("/dev/shm").is_dir() {
        // SAFETY: single-threaded at this point.
        unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    }
    println!("fixtures under {}", std::env::temp_dir().display());
    let n = runs();
    let exe = env!("CARGO_BIN_EXE_hotplug-hook");
    let size = std::fs::metadata(exe).map(|m| m.len()).unwrap_or(0);
    println!(
        "hotplug-hook handle, {n} runs per row ({exe}, {:.0} KiB)",
        size as f64 / 1024.0
    );
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>8} {:>9}",
        "case", "median ms", "p95 ms", "min ms", "x true", "RSS KiB"
    );

    let baseline = time(n, || Command::new("/bin/true"), || {});
    let row = |name: &str, s: &Stats| {
        println!(
            "{:<18} {:>10.3} {:>10.3} {:>10.3} {:>8.1} {:>9}",
            name,
            ms(s.median),
            ms(s.p95),
            ms(s.min),
            ms(s.median) / ms(baseline.median),
            s.rss_kib
        );
    };
    row("spawn /bin/true", &baseline);

    // driver-unload: mid `modprobe -r ena`, 2 ENIs recorded.
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", "02:00:00:00:00:05", 2, ModKind::Loadable);
    t.ena(6, "ens6", "02:00:00:00:00:06", 3, ModKind::Loadable);
    t.run(&["scan"], &[]);
    t.module_going("ena");
    t.unbind(&ens5);
    row(
        "driver-unload",
        &time(n, || udev_cmd(&t, "remove", &ens5, 2, "ena"), || {}),
    );

    // vf-flap: Azure (Gen2) takes eth0's mlx5 VF away; eth0 and the VF
    // recorded, as on a VM booted with accelerated networking.
    let t = Tree::new();
    t.dmi("azure");
    t.hv_netvsc(
        common::clouds::VMBUS_GEN2,
        "000d3a6f-0000-4a1c-8b1e-2c5d7f0e8a11",
        "eth0",
        "00:0d:3a:f8:a1:b2",
        2,
    );
    let vf = t.azure_vf(
        common::clouds::VMBUS_GEN2,
        "6f1c6a3e-9a1b-4c3d-8e2f-0a1b2c3d4e5f",
        0x7870,
        common::clouds::Vf::Mlx5,
        "00:0d:3a:f8:a1:b2",
        3,
    );
    t.run(&["scan"], &[]);
    t.revoke_vf(&vf);
    row(
        "vf-flap",
        &time(n, || udev_cmd(&t, "remove", &vf, 3, "mlx5_core"), || {}),
    );

    // device-returned: the reload finished before the hook ran.
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", "02:00:00:00:00:05", 2, ModKind::Loadable);
    t.run(&["scan"], &[]);
    let t_ret = {
        t.unload("pci", "ena", "ena", &[&ens5]);
        t.driver("pci", "ena", "ena", ModKind::Loadable);
        t.bind("/devices/pci0000:00/0000:00:05.0", "pci", "ena");
        t.netdev(
            "/devices/pci0000:00/0000:00:05.0",
            "ens5",
            "02:00:00:00:00:05",
            7,
        );
        t
    };
    row(
        "device-returned",
        &time(n, || udev_cmd(&t_ret, "remove", &ens5, 2, "ena"), || {}),
    );

    // device-removed (backend none): ENI detached.
    let t = Tree::new();
    let ens6 = t.ena(6, "ens6", "02:00:00:00:00:06", 3, ModKind::Loadable);
    t.hot_unplug(&ens6);
    row(
        "device-removed",
        &time(n, || udev_cmd(&t, "remove", &ens6, 3, "ena"), || {}),
    );

    // netdev-detached: moved into a container's namespace.
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", "02:00:00:00:00:05", 2, ModKind::Loadable);
    t.netns_move(&ens5);
    row(
        "netdev-detached",
        &time(n, || udev_cmd(&t, "remove", &ens5, 2, "ena"), || {}),
    );

    // unmanaged: an ENI an ignore selector leaves to a CNI (by name).
    let t = Tree::new();
    let ens9 = t.ena(9, "ens9", "02:00:00:00:00:09", 11, ModKind::Loadable);
    row(
        "unmanaged",
        &time(
            n,
            || {
                t.udev_command(
                    "add",
                    &ens9,
                    11,
                    "ena",
                    &["--ignore", r#"{"ifname": "ens[6-9]"}"#],
                    &[],
                )
            },
            || {},
        ),
    );

    // virtual: a veth appears.
    let t = Tree::new();
    let veth = t.veth("veth0", "0a:00:00:00:00:01", 9);
    row(
        "virtual",
        &time(n, || udev_cmd(&t, "add", &veth, 9, "veth"), || {}),
    );

    // new-device (backend none): a fresh ENI; its record is removed between runs.
    let t = Tree::new();
    let ens7 = t.ena(7, "ens7", "02:00:00:00:00:07", 4, ModKind::Loadable);
    let ifaces = t.state.join("ifaces");
    row(
        "new-device",
        &time(
            n,
            || udev_cmd(&t, "add", &ens7, 4, "ena"),
            || {
                let _ = std::fs::remove_dir_all(&ifaces);
            },
        ),
    );

    // A replayed add and a driver-unload remove with 10 000 records of other
    // NICs in the state dir: finding a NIC's records reads the directory
    // once, never every record.
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", "02:00:00:00:00:05", 2, ModKind::Loadable);
    t.run(&["scan"], &[]);
    row(
        "add, 1 record",
        &time(n, || udev_cmd(&t, "add", &ens5, 2, "ena"), || {}),
    );
    let ifaces = t.state.join("ifaces");
    for i in 0..10_000u32 {
        let mac = format!(
            "0a:00:00:{:02x}:{:02x}:{:02x}",
            i >> 16,
            (i >> 8) & 0xff,
            i & 0xff
        );
        let devpath = format!("/devices/pci0001:00/0001:00:00.{i}/net/x{i}");
        let rec = serde_json::json!({
            "format": 2, "name": format!("x{i}"), "mac": mac, "devpath": devpath,
            "ifindex": i + 100, "seen_ms": 1, "departed": null,
        });
        let dir = ifaces.join(mac.replace(':', ""));
        std::fs::create_dir_all(&dir).unwrap();
        let hash = format!("{:016x}", u64::from(i) * 7919);
        std::fs::write(dir.join(format!("{hash}.json")), rec.to_string()).unwrap();
    }
    row(
        "add, 10k records",
        &time(n, || udev_cmd(&t, "add", &ens5, 2, "ena"), || {}),
    );
    t.module_going("ena");
    t.unbind(&ens5);
    row(
        "unload, 10k recs",
        &time(n, || udev_cmd(&t, "remove", &ens5, 2, "ena"), || {}),
    );

    // driver-unbind waits out the settle window (default 300 ms): fewer runs.
    let t = Tree::new();
    let ens5 = t.ena(5, "ens5", "02:00:00:00:00:05", 2, ModKind::Loadable);
    t.unbind(&ens5);
    row(
        "driver-unbind",
        &time(n.min(20), || udev_cmd(&t, "remove", &ens5, 2, "ena"), || {}),
    );
}
