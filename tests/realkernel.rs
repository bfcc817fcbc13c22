//! Real kernel, real udevd: boots Debian's kernel in QEMU (TCG, no KVM) from
//! an initramfs holding busybox, kmod, iproute2, the host's systemd-udevd and
//! rules, the release binary and the project's rule (its driver filter
//! widened to virtio_net|e1000e|e1000), drives the scenarios of
//! `tests/realkernel/scenarios.sh` (reloads, unbinds, the virtio transport,
//! netns moves, renames, PCI removal, QMP hot-unplug and replug, late
//! handling, repeats) once under ACPI PCI hotplug and once under native
//! pciehp, and compares every event's journal entry with the expected
//! verdicts. Prints a table (also in `target/realkernel/report.txt`); fails
//! on any mismatch.
//!
//! Needs root, `qemu-system-x86 busybox-static kmod cpio udev iproute2` and
//! apt (the kernel package, `linux-image-<abi>-amd64` as `linux-image-amd64`
//! resolves today, is downloaded into `target/realkernel/kernel/` and reused);
//! skipped with a message otherwise, except in CI. `HOTPLUG_REALKERNEL=full`
//! runs every scenario and 10 repeats of the reloads and fast rebinds; the
//! default (for `cargo test` and CI) one scenario of each family and 3
//! repeats. `HOTPLUG_REALKERNEL=off` skips it; `HOTPLUG_REALKERNEL_BIN=PATH`
//! tests that binary instead of building `target/release/hotplug-hook`
//! (e.g. an older build, to compare). Two runs at once take turns (a lock
//! in `target/realkernel/`).
//!
//! The guest has no network: every NIC is on its own QEMU hub port. Nothing
//! on the host is touched but `target/realkernel/`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde_json::{Value, json};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
/// What the shipped rule's driver filter is widened to in the guest.
const DRIVERS: &str = "virtio_net|e1000e|e1000";
/// Kernel modules the guest needs (with their dependencies).
const MODULES: [&str; 4] = ["virtio_net", "virtio_pci", "e1000e", "e1000"];

struct Nic {
    label: &'static str,
    model: &'static str,
    driver: &'static str,
    mac: &'static str,
}

/// Each on its own pcie-root-port `rp<N>` (N = position + 1), hot-pluggable.
const NICS: [Nic; 5] = [
    Nic {
        label: "nic1",
        model: "virtio-net-pci",
        driver: "virtio_net",
        mac: "52:54:00:12:34:01",
    },
    Nic {
        label: "nic2",
        model: "e1000e",
        driver: "e1000e",
        mac: "52:54:00:12:34:02",
    },
    Nic {
        label: "nic3",
        model: "e1000",
        driver: "e1000",
        mac: "52:54:00:12:34:03",
    },
    Nic {
        label: "nic4",
        model: "virtio-net-pci",
        driver: "virtio_net",
        mac: "52:54:00:12:34:04",
    },
    Nic {
        label: "nic5",
        model: "e1000e",
        driver: "e1000e",
        mac: "52:54:00:12:34:05",
    },
];

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// q35's default: ACPI PCI hotplug.
    Acpi,
    /// `acpi-pci-hotplug-with-bridge-support=off`: the kernel's pciehp.
    Native,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Acpi => "acpi",
            Mode::Native => "native",
        }
    }
}

// --- prerequisites -----------------------------------------------------------

/// A missing prerequisite: a skip with a message, or a failure in CI.
fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why} in CI (.ci/run runs as root and installs qemu-system-x86 busybox-static kmod cpio udev iproute2)"
    );
    eprintln!("SKIPPED real-kernel suite: {why}");
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(cmd: &mut Command) -> String {
    output(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// The generic amd64 kernel (`linux-image-amd64`'s dependency today),
/// downloaded and unpacked once into `target/realkernel/kernel/<package>/`.
/// Returns the unpacked root and the kernel release.
fn kernel(cache: &Path) -> Result<(PathBuf, String), String> {
    fs::create_dir_all(cache).map_err(|e| e.to_string())?;
    let resolve = || -> Option<String> {
        let out = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"])).ok()?;
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .map(str::trim)
            .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
            .map(str::to_string)
    };
    let pkg = match resolve() {
        Some(p) => Some(p),
        None if which("apt-get").is_some() => {
            eprintln!("apt-cache knows no linux-image-amd64: apt-get update");
            let _ = output(Command::new("apt-get").args(["update", "-qq"]));
            resolve()
        }
        None => None,
    };
    let unpacked = |root: &Path| -> Option<String> {
        let boot = fs::read_dir(root.join("boot")).ok()?;
        boot.filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("vmlinuz-")
                    .map(str::to_string)
            })
            .find(|k| root.join("lib/modules").join(k).is_dir())
    };
    let Some(pkg) = pkg else {
        // Offline: any kernel unpacked before will do.
        for e in fs::read_dir(cache).map_err(|e| e.to_string())?.flatten() {
            if let Some(k) = unpacked(&e.path()) {
                return Ok((e.path(), k));
            }
        }
        return Err("cannot resolve linux-image-amd64 (apt-cache) and no kernel is cached".into());
    };
    let root = cache.join(&pkg);
    if let Some(k) = unpacked(&root) {
        return Ok((root, k));
    }
    let _ = fs::remove_dir_all(&root);
    let find_deb = || {
        fs::read_dir(cache).ok().and_then(|d| {
            d.flatten().map(|e| e.path()).find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb")
            })
        })
    };
    let deb = match find_deb() {
        Some(d) => d,
        None => {
            eprintln!("downloading {pkg}");
            output(
                Command::new("apt-get")
                    .args(["download", "-q", &pkg])
                    .current_dir(cache),
            )?;
            find_deb().ok_or(format!("apt-get download {pkg} left no .deb"))?
        }
    };
    let tmp = cache.join(format!("{pkg}.tmp{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    let k = unpacked(&tmp).ok_or(format!("{pkg} has no vmlinuz"))?;
    // The package ships no modules.dep (its postinst makes it).
    output(
        Command::new(which("depmod").ok_or("no depmod")?)
            .arg("-b")
            .arg(&tmp)
            .arg(&k),
    )?;
    if fs::rename(&tmp, &root).is_err() {
        // Another run unpacked it first.
        let _ = fs::remove_dir_all(&tmp);
    }
    let _ = fs::remove_file(&deb);
    Ok((root, k))
}

// --- the initramfs -----------------------------------------------------------

/// Copies a host file into `tree` at the same path, following symlink chains
/// (recreating each link) and copying an ELF file's shared libraries.
fn install(tree: &Path, path: &Path) {
    let parent = path
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let path = parent.join(path.file_name().unwrap());
    let dest = tree.join(path.strip_prefix("/").unwrap());
    if fs::symlink_metadata(&dest).is_ok() {
        return;
    }
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&path).unwrap();
        symlink(&target, &dest).unwrap();
        install(tree, &parent.join(target));
        return;
    }
    fs::copy(&path, &dest).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    install_libs(tree, &path);
}

/// Copies the shared libraries of an ELF executable into `tree`.
fn install_libs(tree: &Path, elf: &Path) {
    let is_elf = fs::read(elf)
        .map(|b| b.starts_with(b"\x7fELF"))
        .unwrap_or(false);
    if !is_elf {
        return;
    }
    let out = Command::new("ldd").arg(elf).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let lib = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
            install(tree, Path::new(lib));
        }
    }
}

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The shipped rule with its driver filter widened; the RUN path is where the
/// guest has the binary (the rule's own `/usr/libexec/hotplug-hook`).
fn guest_rule() -> String {
    let rule =
        fs::read_to_string(Path::new(MANIFEST).join("udev-rules/90-hotplug-hook.rules")).unwrap();
    let mut filters = 0;
    let mut runs = 0;
    let out: Vec<String> = rule
        .lines()
        .map(|l| {
            if l.starts_with("ENV{ID_NET_DRIVER}!=") {
                filters += 1;
                format!("ENV{{ID_NET_DRIVER}}!=\"{DRIVERS}\", GOTO=\"hotplug_hook_end\"")
            } else if let Some(rest) = l.strip_prefix("RUN+=\"") {
                runs += 1;
                let args = rest.split_once(' ').map_or("\"", |(_, a)| a);
                format!("RUN+=\"/usr/libexec/hotplug-hook {args}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(
        (filters, runs),
        (1, 1),
        "udev-rules/90-hotplug-hook.rules: expected one ENV{{ID_NET_DRIVER}}!= filter and one RUN+="
    );
    out.join("\n") + "\n"
}

fn build_initramfs(work: &Path, kroot: &Path, kver: &str, hook: &Path) -> PathBuf {
    let tree = work.join("initramfs");
    let _ = fs::remove_dir_all(&tree);
    for d in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/libexec"] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    for (link, to) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        symlink(to, tree.join(link)).unwrap();
    }
    for d in ["proc", "sys", "dev", "run", "tmp", "var", "etc/rk"] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    symlink("/run", tree.join("var/run")).unwrap();

    // Tools: the real ones first, busybox for every other applet.
    // busybox sh runs its own applets (ip, modprobe...) before $PATH: the
    // scripts call the real ones through these functions.
    let mut tools =
        String::from("# Written by tests/realkernel.rs: the real tools, not busybox applets.\n");
    for tool in [
        "ip", "modprobe", "insmod", "rmmod", "lsmod", "modinfo", "udevadm",
    ] {
        let path = which(tool).unwrap();
        install(&tree, &path);
        let _ = writeln!(tools, "{tool}() {{ {} \"$@\"; }}", path.display());
    }
    write(&tree.join("etc/rk/tools.sh"), &tools, 0o644);
    for p in [
        "/lib/systemd/systemd-udevd",
        "/usr/lib/systemd/network/99-default.link",
        "/usr/lib/udev/hwdb.bin",
    ] {
        if Path::new(p).exists() {
            install(&tree, Path::new(p));
        }
    }
    for e in fs::read_dir("/usr/lib/udev/rules.d").unwrap().flatten() {
        install(&tree, &e.path());
    }
    let busybox = which("busybox").unwrap();
    install(&tree, &busybox);
    fs::copy(&busybox, tree.join("usr/bin/busybox")).unwrap();
    let applets = must(Command::new(&busybox).arg("--list-full"));
    for a in applets.lines().filter(|a| !a.is_empty()) {
        let dest = tree.join(a);
        if fs::symlink_metadata(&dest).is_err() {
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            symlink("/usr/bin/busybox", &dest).unwrap();
        }
    }

    // The kernel's modules we need, and their dependencies.
    let mdir = format!("lib/modules/{kver}");
    for m in MODULES {
        let deps = must(
            Command::new(which("modprobe").unwrap())
                .arg("-d")
                .arg(kroot)
                .args(["-S", kver, "--show-depends", m]),
        );
        for l in deps.lines() {
            if let Some(ko) = l.strip_prefix("insmod ") {
                let ko = ko.split_whitespace().next().unwrap();
                let rel = Path::new(ko).strip_prefix(kroot).unwrap_or(Path::new(ko));
                let rel = rel.strip_prefix("/").unwrap_or(rel);
                let dest = tree.join(rel);
                fs::create_dir_all(dest.parent().unwrap()).unwrap();
                fs::copy(kroot.join(rel), &dest).unwrap();
            }
        }
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let src = kroot.join(&mdir).join(f);
        if src.exists() {
            fs::copy(&src, tree.join(&mdir).join(f)).unwrap();
        }
    }
    must(
        Command::new(which("depmod").unwrap())
            .arg("-b")
            .arg(&tree)
            .arg(kver),
    );

    // The hook, the rule, its config; the env logger.
    fs::copy(hook, tree.join("usr/libexec/hotplug-hook")).unwrap();
    install_libs(&tree, hook);
    symlink(
        "../libexec/hotplug-hook",
        tree.join("usr/sbin/hotplug-hook"),
    )
    .unwrap();
    let rules = tree.join("usr/lib/udev/rules.d");
    write(&rules.join("90-hotplug-hook.rules"), &guest_rule(), 0o644);
    let guest = Path::new(MANIFEST).join("tests/realkernel");
    let text = |f: &str| fs::read_to_string(guest.join(f)).unwrap();
    write(
        &rules.join("95-realkernel-envlog.rules"),
        &text("95-realkernel-envlog.rules"),
        0o644,
    );
    write(&tree.join("usr/libexec/rk-envlog"), &text("envlog"), 0o755);
    let config = json!({
        "state_dir": "/run/hotplug-hook",
        "imds": false,
        "backend": "command",
        "command": ["/bin/true"],
        "dispatch": "fork",
        "log": "stderr",
        "journal_max_bytes": 64u64 << 20,
    });
    write(
        &tree.join("etc/hotplug-hook/config.json"),
        &serde_json::to_string_pretty(&config).unwrap(),
        0o644,
    );
    write(&tree.join("init"), &text("init"), 0o755);
    write(&tree.join("etc/rk/lib.sh"), &text("lib.sh"), 0o644);
    write(
        &tree.join("etc/rk/scenarios.sh"),
        &text("scenarios.sh"),
        0o644,
    );
    let nics: String = NICS
        .iter()
        .map(|n| format!("{} {} {} {}\n", n.label, n.model, n.driver, n.mac))
        .collect();
    write(&tree.join("etc/rk/nics"), &nics, 0o644);

    let cpio = work.join("initrd.cpio");
    must(
        Command::new("sh")
            .arg("-c")
            .arg("cd \"$1\" && find . | cpio -o -H newc -R 0:0 --quiet > \"$2\"")
            .arg("sh")
            .arg(&tree)
            .arg(&cpio),
    );
    cpio
}

// --- QEMU and its QMP --------------------------------------------------------

/// Kills QEMU (by its PID) if it is still running when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn connect(path: &Path) -> Option<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = UnixStream::connect(path) {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    deleted: HashSet<String>,
    netdevs: u32,
    closed: bool,
}

impl Qmp {
    fn open(path: &Path) -> Option<Qmp> {
        let s = connect(path)?;
        let mut q = Qmp {
            reader: BufReader::new(s.try_clone().ok()?),
            writer: s,
            deleted: HashSet::new(),
            netdevs: 0,
            closed: false,
        };
        q.read(Duration::from_secs(20))?; // the greeting
        q.cmd(json!({"execute": "qmp_capabilities"})).ok()?;
        Some(q)
    }

    /// The next message, noting DEVICE_DELETED events.
    fn read(&mut self, timeout: Duration) -> Option<Value> {
        self.reader.get_ref().set_read_timeout(Some(timeout)).ok()?;
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            self.closed = true;
            return None;
        }
        let v: Value = serde_json::from_str(&line).ok()?;
        if v["event"] == "DEVICE_DELETED"
            && let Some(d) = v["data"]["device"].as_str()
        {
            self.deleted.insert(d.to_string());
        }
        Some(v)
    }

    fn cmd(&mut self, c: Value) -> Result<Value, String> {
        writeln!(self.writer, "{c}").map_err(|e| e.to_string())?;
        loop {
            let v = self
                .read(Duration::from_secs(30))
                .ok_or("no reply from QMP")?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(e["desc"].as_str().unwrap_or("error").to_string());
            }
        }
    }

    fn wait_deleted(&mut self, id: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.deleted.contains(id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.closed {
                return false;
            }
            self.read(left.min(Duration::from_secs(1)));
        }
        true
    }

    /// One control request from the guest: `del L`, `delnowait L`,
    /// `waitdel L`, `add L MAC`.
    fn request(&mut self, words: &[&str]) -> Result<String, String> {
        let nic = |l: &str| {
            NICS.iter()
                .position(|n| n.label == l)
                .ok_or(format!("no NIC {l}"))
        };
        let t = Instant::now();
        match words {
            ["del" | "delnowait", l] => {
                nic(l)?;
                self.deleted.remove(*l);
                self.cmd(json!({"execute": "device_del", "arguments": {"id": l}}))?;
                if words[0] == "del" && !self.wait_deleted(l, 60) {
                    return Err(format!("{l}: no DEVICE_DELETED in 60 s"));
                }
            }
            ["waitdel", l] => {
                if !self.wait_deleted(l, 60) {
                    return Err(format!("{l}: no DEVICE_DELETED in 60 s"));
                }
            }
            ["add", l, mac] => {
                let i = nic(l)?;
                self.netdevs += 1;
                let id = format!("{l}-hp{}", self.netdevs);
                self.cmd(json!({"execute": "netdev_add",
                    "arguments": {"type": "hubport", "id": id, "hubid": i + 1}}))?;
                self.cmd(json!({"execute": "device_add", "arguments": {
                    "driver": NICS[i].model, "id": l, "bus": format!("rp{}", i + 1),
                    "netdev": id, "mac": mac}}))?;
            }
            _ => return Err(format!("unknown request {words:?}")),
        }
        Ok(format!("{} ms", t.elapsed().as_millis()))
    }
}

/// Serves the guest's requests on the control serial port until QEMU exits.
fn serve(ctl: PathBuf, qmp: PathBuf) {
    let Some(ctl) = connect(&ctl) else {
        eprintln!("realkernel: cannot connect the control port");
        return;
    };
    let mut q = Qmp::open(&qmp);
    let mut out = ctl.try_clone().unwrap();
    for line in BufReader::new(ctl).lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["REQ", n, req @ ..] = words.as_slice() else {
            continue;
        };
        let reply = match q.as_mut() {
            Some(q) => q.request(req),
            None => Err("QMP is not connected".into()),
        };
        let reply = match reply {
            Ok(r) => format!("ACK {n} ok {r}"),
            Err(e) => format!("ACK {n} error {}", e.replace(['\n', '\r'], " ")),
        };
        if writeln!(out, "{reply}").is_err() {
            break;
        }
    }
}

struct Boot {
    mode: Mode,
    console: String,
    wall: Duration,
    /// Host time from QEMU's start to the guest's first line.
    booted: Option<Duration>,
    failure: Option<String>,
}

fn boot(work: &Path, kernel: &Path, initrd: &Path, mode: Mode, full: bool) -> Boot {
    let dir = work.join(format!("run-{}", mode.name()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let console = dir.join("console.log");
    let (ctl, qmp) = (dir.join("ctl.sock"), dir.join("qmp.sock"));
    let mut args: Vec<String> = vec![
        "-machine".into(),
        "q35".into(),
        "-accel".into(),
        "tcg".into(),
        "-smp".into(),
        "2".into(),
        "-m".into(),
        "768".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-nic".into(),
        "none".into(),
        "-kernel".into(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        format!(
            "console=ttyS0,115200 loglevel=1 panic=-1 rdinit=/init rk.mode={} rk.set={}",
            mode.name(),
            if full { "full" } else { "default" }
        ),
        "-chardev".into(),
        format!("file,id=con,path={}", console.display()),
        "-serial".into(),
        "chardev:con".into(),
        "-chardev".into(),
        format!("socket,id=ctl,path={},server=on,wait=off", ctl.display()),
        "-serial".into(),
        "chardev:ctl".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ];
    if mode == Mode::Native {
        args.push("-global".into());
        args.push("ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off".into());
    }
    for (i, n) in NICS.iter().enumerate() {
        let k = i + 1;
        args.extend([
            "-device".into(),
            format!(
                "pcie-root-port,id=rp{k},bus=pcie.0,chassis={k},slot={k},addr=0x{:x}",
                0x10 + i
            ),
            "-netdev".into(),
            format!("hubport,id=n{k},hubid={k}"),
            "-device".into(),
            format!(
                "{},id={},bus=rp{k},netdev=n{k},mac={}",
                n.model, n.label, n.mac
            ),
        ]);
    }
    let log = fs::File::create(dir.join("qemu.log")).unwrap();
    let start = Instant::now();
    let mut cmd = Command::new("qemu-system-x86_64");
    // QEMU dies with the test process, however that ends.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut qemu = Qemu(child);
    let server = std::thread::spawn(move || serve(ctl, qmp));

    let limit = Duration::from_secs(if full { 2400 } else { 420 });
    let mut shown = 0;
    let mut booted = None;
    let mut failure = None;
    loop {
        let exited = qemu.0.try_wait().unwrap().is_some();
        let text = fs::read_to_string(&console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        // Progress: a line per scenario (complete lines only).
        let complete = if text.ends_with('\n') {
            lines.len()
        } else {
            lines.len().saturating_sub(1)
        };
        for l in &lines[shown.min(complete)..complete] {
            if booted.is_none() && l.contains("RK|BOOTED") {
                booted = Some(start.elapsed());
            }
            if let Some(i) = l.find("RK|") {
                let f: Vec<&str> = l[i..].split('|').collect();
                match f[1] {
                    "BOOTED" | "UDEVD" | "DONE" | "FATAL" => eprintln!(
                        "[{} {:6.1}s] {}",
                        mode.name(),
                        start.elapsed().as_secs_f64(),
                        f[1..].join(" ")
                    ),
                    "END" | "SKIP" => eprintln!(
                        "[{} {:6.1}s] {} {}",
                        mode.name(),
                        start.elapsed().as_secs_f64(),
                        f[1],
                        f[2..].join(" ")
                    ),
                    _ => {}
                }
            }
        }
        shown = shown.max(complete);
        if exited {
            if !text.contains("RK|DONE") {
                failure = Some("the guest stopped before the end (see the console)".into());
            }
            break;
        }
        if start.elapsed() > limit {
            failure = Some(format!("timed out after {} s", limit.as_secs()));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(qemu);
    let _ = server.join();
    let text = fs::read_to_string(&console).unwrap_or_default();
    Boot {
        mode,
        console: text,
        wall: start.elapsed(),
        booted,
        failure,
    }
}

// --- results -----------------------------------------------------------------

struct Expect {
    label: String,
    action: String,
    optional: bool,
    verdicts: Vec<String>,
}

struct Event {
    seq: u64,
    action: String,
    iface: String,
    label: Option<String>,
    env: BTreeMap<String, String>,
    /// The hook's journal entry, if it wrote one.
    entry: Option<Value>,
}

#[derive(Default)]
struct Scenario {
    name: String,
    expects: Vec<Expect>,
    events: Vec<Event>,
    udevd_log: Vec<String>,
    notes: Vec<String>,
    ms: Option<u64>,
    skipped: Option<String>,
}

impl Event {
    /// What the hook did: its verdict, or why there is none.
    fn actual(&self, udevd_log: &[String]) -> String {
        if let Some(e) = &self.entry {
            return e["verdict"].as_str().unwrap_or("?").to_string();
        }
        let driver = self.env.get("ID_NET_DRIVER").map_or("", String::as_str);
        if !DRIVERS.split('|').any(|d| d == driver) {
            return format!("not run (ID_NET_DRIVER={driver:?})");
        }
        // udevd logs "IFACE: Process '...hotplug-hook handle' failed with exit code N."
        let failed = udevd_log.iter().find_map(|l| {
            let (dev, rest) = l.split_once(": ")?;
            (dev.trim() == self.iface && rest.contains("hotplug-hook"))
                .then(|| rest.split("exit code ").nth(1))
                .flatten()
                .map(|c| c.trim_end_matches('.').to_string())
        });
        match failed {
            Some(code) => format!("exit {code}, no entry"),
            None => "no journal entry".into(),
        }
    }

    fn ms(&self) -> String {
        self.entry
            .as_ref()
            .and_then(|e| e["duration_ms"].as_f64())
            .map_or("-".into(), |m| format!("{m:.1}"))
    }
}

/// Parses one boot's console into scenarios and the NIC table.
fn parse(console: &str) -> (Vec<Scenario>, BTreeMap<String, String>) {
    let mut scens: Vec<Scenario> = Vec::new();
    let mut pci_label: BTreeMap<String, String> = BTreeMap::new();
    let mut journal: HashMap<String, Vec<Value>> = HashMap::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for line in console.lines() {
        let Some(i) = line.find("RK|") else { continue };
        let f: Vec<&str> = line[i..].trim_end_matches('\r').splitn(4, '|').collect();
        if f.len() < 3 {
            continue;
        }
        let name = f[2].to_string();
        let mut at = |name: &str| -> usize {
            *by_name.entry(name.to_string()).or_insert_with(|| {
                scens.push(Scenario {
                    name: name.to_string(),
                    ..Default::default()
                });
                scens.len() - 1
            })
        };
        match f[1] {
            "NIC" => {
                let n: Vec<&str> = line[i..].split('|').collect();
                if n.len() >= 7 && n[5] != "?" {
                    pci_label.insert(n[5].to_string(), n[2].to_string());
                }
            }
            "BEGIN" => {
                at(&name);
            }
            "SKIP" => {
                let s = at(&name);
                scens[s].skipped = Some(f.get(3).unwrap_or(&"").to_string());
            }
            "END" => {
                let s = at(&name);
                scens[s].ms = f.get(3).and_then(|m| m.trim().parse().ok());
            }
            "NOTE" => {
                let s = at(&name);
                scens[s].notes.push(f.get(3).unwrap_or(&"").to_string());
            }
            "UDEVD_LOG" => {
                let s = at(&name);
                scens[s].udevd_log.push(f.get(3).unwrap_or(&"").to_string());
            }
            "EXPECT" => {
                // The verdict set (the last field) holds '|' itself.
                let e: Vec<&str> = line[i..].splitn(6, '|').collect();
                if e.len() < 6 {
                    continue;
                }
                let s = at(&name);
                scens[s].expects.push(Expect {
                    label: e[3].to_string(),
                    action: e[4].trim_end_matches('?').to_string(),
                    optional: e[4].ends_with('?'),
                    verdicts: e[5].split('|').map(|v| v.trim().to_string()).collect(),
                });
            }
            "EV" => {
                let env: BTreeMap<String, String> = f
                    .get(3)
                    .unwrap_or(&"")
                    .split('\t')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let s = at(&name);
                scens[s].events.push(Event {
                    seq: env.get("SEQNUM").and_then(|s| s.parse().ok()).unwrap_or(0),
                    action: env.get("ACTION").cloned().unwrap_or_default(),
                    iface: env.get("INTERFACE").cloned().unwrap_or_default(),
                    label: None,
                    env,
                    entry: None,
                });
            }
            "J" => {
                if let Ok(v) = serde_json::from_str::<Value>(f.get(3).unwrap_or(&"")) {
                    journal.entry(name).or_default().push(v);
                }
            }
            _ => {}
        }
    }
    let label_of = |devpath: &str| devpath.split('/').find_map(|c| pci_label.get(c).cloned());
    for s in &mut scens {
        for e in journal.remove(&s.name).unwrap_or_default() {
            if e["kind"] != "event" {
                continue;
            }
            let seq = e["seqnum"].as_u64();
            match s.events.iter_mut().find(|ev| Some(ev.seq) == seq) {
                Some(ev) => ev.entry = Some(e),
                None => s.events.push(Event {
                    seq: seq.unwrap_or(0),
                    action: e["action"].as_str().unwrap_or("?").to_string(),
                    iface: e["iface"].as_str().unwrap_or("?").to_string(),
                    label: None,
                    env: BTreeMap::from([(
                        "DEVPATH".to_string(),
                        e["devpath"].as_str().unwrap_or("").to_string(),
                    )]),
                    entry: Some(e),
                }),
            }
        }
        for ev in &mut s.events {
            ev.label = ev.env.get("DEVPATH").and_then(|d| label_of(d));
        }
        s.events.sort_by_key(|e| e.seq);
    }
    (scens, pci_label)
}

struct Row {
    label: String,
    event: String,
    expected: String,
    actual: String,
    ms: String,
    ok: bool,
    seq: u64,
}

/// Aligns the expected verdicts of one NIC's action with the events seen
/// (in kernel order), at the least number of mismatches: an optional
/// expectation may go unmatched for free; a missing required one, an
/// unexpected event and a wrong verdict cost one each.
fn align(exp: &[&Expect], act: &[&Event], log: &[String]) -> Vec<Row> {
    let (n, m) = (exp.len(), act.len());
    let hit = |i: usize, j: usize| exp[i].verdicts.contains(&act[j].actual(log));
    let mut cost = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            cost[i][j] = if i == n {
                (m - j) as u32
            } else if j == m {
                cost[i + 1][j] + u32::from(!exp[i].optional)
            } else {
                let pair = cost[i + 1][j + 1] + u32::from(!hit(i, j));
                let skip_e = cost[i + 1][j] + u32::from(!exp[i].optional);
                let extra = cost[i][j + 1] + 1;
                pair.min(skip_e).min(extra)
            };
        }
    }
    let mut rows = Vec::new();
    let (mut i, mut j) = (0, 0);
    let event_row = |e: &Event, expected: String, ok: bool| Row {
        label: e.label.clone().unwrap_or_default(),
        event: format!("{} {} #{}", e.action, e.iface, e.seq),
        expected,
        actual: e.actual(log),
        ms: e.ms(),
        ok,
        seq: e.seq,
    };
    let want = |x: &Expect| {
        format!(
            "{}{}",
            x.verdicts.join("|"),
            if x.optional { " (optional)" } else { "" }
        )
    };
    while i < n || j < m {
        if i < n && j < m && cost[i][j] == cost[i + 1][j + 1] + u32::from(!hit(i, j)) {
            rows.push(event_row(act[j], want(exp[i]), hit(i, j)));
            i += 1;
            j += 1;
        } else if i < n && cost[i][j] == cost[i + 1][j] + u32::from(!exp[i].optional) {
            if !exp[i].optional {
                rows.push(Row {
                    label: exp[i].label.clone(),
                    event: format!("{} (none)", exp[i].action),
                    expected: want(exp[i]),
                    actual: "no such event".into(),
                    ms: "-".into(),
                    ok: false,
                    seq: u64::MAX,
                });
            }
            i += 1;
        } else {
            rows.push(event_row(act[j], "(no event expected)".into(), false));
            j += 1;
        }
    }
    rows
}

fn rows_of(s: &Scenario) -> Vec<Row> {
    let mut keys: Vec<(String, String)> = s
        .expects
        .iter()
        .map(|e| (e.label.clone(), e.action.clone()))
        .chain(
            s.events
                .iter()
                // Events of devices that are none of our NICs (lo) that the
                // hook did not handle are no concern of the table.
                .filter(|e| e.label.is_some() || e.entry.is_some())
                .map(|e| (e.label.clone().unwrap_or("?".into()), e.action.clone())),
        )
        .collect();
    keys.sort();
    keys.dedup();
    let mut rows = Vec::new();
    for (label, action) in keys {
        let exp: Vec<&Expect> = s
            .expects
            .iter()
            .filter(|e| e.label == label && e.action == action)
            .collect();
        let act: Vec<&Event> = s
            .events
            .iter()
            .filter(|e| e.label.as_deref().unwrap_or("?") == label && e.action == action)
            .filter(|e| e.label.is_some() || e.entry.is_some())
            .collect();
        rows.extend(align(&exp, &act, &s.udevd_log));
    }
    rows.sort_by(|a, b| (&a.label, a.seq).cmp(&(&b.label, b.seq)));
    rows
}

fn family(name: &str) -> &str {
    name.split('#').next().unwrap()
}

/// The table, the orderings seen, the udev environment per action, timings.
fn report(boots: &[Boot], total: Duration) -> (String, usize) {
    let mut t = String::new();
    let mut mismatches = 0;
    let mut events = 0;
    let mut orderings: BTreeMap<(String, String), BTreeMap<String, u32>> = BTreeMap::new();
    let mut keys: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    let mut module_state: BTreeMap<String, u32> = BTreeMap::new();
    let mut samples: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut durations: Vec<f64> = Vec::new();
    let mut other = String::new();
    let _ = writeln!(
        t,
        "{:<6} {:<32} {:<5} {:<24} {:<34} {:<30} {:>7}  result",
        "mode", "scenario", "NIC", "event", "expected", "actual", "ms"
    );
    for b in boots {
        let (scens, _) = parse(&b.console);
        if let Some(f) = &b.failure {
            mismatches += 1;
            let _ = writeln!(other, "{}: BOOT FAILURE: {f}", b.mode.name());
        }
        for s in &scens {
            if let Some(why) = &s.skipped {
                let _ = writeln!(t, "{:<6} {:<32} skipped: {why}", b.mode.name(), s.name);
                continue;
            }
            if s.ms.is_none() {
                mismatches += 1;
                let _ = writeln!(t, "{:<6} {:<32} DID NOT FINISH", b.mode.name(), s.name);
            }
            let rows = rows_of(s);
            let mut combo: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in &rows {
                if !r.ok {
                    mismatches += 1;
                }
                let _ = writeln!(
                    t,
                    "{:<6} {:<32} {:<5} {:<24} {:<34} {:<30} {:>7}  {}",
                    b.mode.name(),
                    s.name,
                    r.label,
                    r.event,
                    r.expected,
                    r.actual,
                    r.ms,
                    if r.ok { "ok" } else { "MISMATCH" }
                );
                if r.seq != u64::MAX {
                    let action = r.event.split(' ').next().unwrap();
                    combo
                        .entry(r.label.clone())
                        .or_default()
                        .push(format!("{action}={}", r.actual));
                }
            }
            for (label, c) in combo {
                // The order udevd ran the hooks in (journal time), when it
                // is not the kernel's.
                let mut ran: Vec<(u64, u64, &str)> = s
                    .events
                    .iter()
                    .filter(|e| e.label.as_deref() == Some(label.as_str()))
                    .filter_map(|e| {
                        let ts = e.entry.as_ref()?["ts_ms"].as_u64()?;
                        Some((ts, e.seq, e.action.as_str()))
                    })
                    .collect();
                let kernel: Vec<u64> = ran.iter().map(|r| r.1).collect();
                ran.sort();
                let mut c = c.join(" ");
                if ran.iter().map(|r| r.1).ne(kernel) {
                    let order: Vec<&str> = ran.iter().map(|r| r.2).collect();
                    let _ = write!(c, "  [hooks finished: {}]", order.join(","));
                }
                *orderings
                    .entry((family(&s.name).to_string(), label))
                    .or_default()
                    .entry(c)
                    .or_default() += 1;
            }
            for e in &s.events {
                if e.label.is_none() {
                    continue;
                }
                events += 1;
                let k = keys.entry(e.action.clone()).or_default();
                *k.entry("(events)".into()).or_default() += 1;
                for key in [
                    "DEVPATH_OLD",
                    "INTERFACE_OLD",
                    "IFINDEX",
                    "ID_NET_DRIVER",
                    "ID_NET_NAME_MAC",
                    "ID_RENAMING",
                    "SYNTH_UUID",
                ] {
                    if e.env.contains_key(key) {
                        *k.entry(key.into()).or_default() += 1;
                    }
                }
                if e.env
                    .get("DEVPATH_OLD")
                    .is_some_and(|o| Some(o) == e.env.get("DEVPATH"))
                {
                    *k.entry("DEVPATH_OLD=DEVPATH (same name)".into())
                        .or_default() += 1;
                }
                samples
                    .entry((family(&s.name).to_string(), e.action.clone()))
                    .or_insert_with(|| {
                        e.env
                            .iter()
                            .filter(|(k, _)| *k != "KEYS")
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    });
                if let Some(entry) = &e.entry {
                    if let Some(d) = entry["duration_ms"].as_f64() {
                        durations.push(d);
                    }
                    if e.action == "remove" {
                        // The journal has no evidence list; its reasons say
                        // what the module's state was.
                        for r in entry["reasons"].as_array().into_iter().flatten() {
                            let r = r.as_str().unwrap_or("");
                            if r.starts_with("module ") {
                                *module_state.entry(r.to_string()).or_default() += 1;
                            }
                        }
                    }
                }
            }
            for n in &s.notes {
                let _ = writeln!(other, "{} {}: {n}", b.mode.name(), s.name);
            }
        }
    }
    let _ = writeln!(t, "\n{mismatches} mismatch(es) over {events} events\n");
    let _ = writeln!(
        t,
        "Orderings seen (per scenario family and NIC, both modes):"
    );
    for ((fam, label), combos) in &orderings {
        for (c, k) in combos {
            let _ = writeln!(t, "  {fam:<32} {label:<5} {k:>3}x  {c}");
        }
    }
    let _ = writeln!(
        t,
        "\nudev environment per action (events carrying each key):"
    );
    for (action, k) in &keys {
        let list: Vec<String> = k.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(t, "  {action:<7} {}", list.join(", "));
    }
    let _ = writeln!(t, "\nmodule state at remove (the hook's reasons):");
    for (k, v) in &module_state {
        let _ = writeln!(t, "  {k}: {v}");
    }
    if !durations.is_empty() {
        durations.sort_by(f64::total_cmp);
        let pct = |p: f64| durations[((durations.len() - 1) as f64 * p) as usize];
        let _ = writeln!(
            t,
            "\nhook decision time: median {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} entries)",
            pct(0.5),
            pct(0.95),
            pct(1.0),
            durations.len()
        );
    }
    let _ = writeln!(t, "\nTimes:");
    for b in boots {
        let _ = writeln!(
            t,
            "  {:<6} boot to first guest line {}, whole boot {:.1} s",
            b.mode.name(),
            b.booted
                .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            b.wall.as_secs_f64()
        );
    }
    let _ = writeln!(t, "  suite wall time {:.1} s", total.as_secs_f64());
    if !other.is_empty() {
        let _ = writeln!(t, "\nNotes:\n{other}");
    }
    let _ = writeln!(t, "\nOne udev environment per scenario family and action:");
    for ((fam, action), env) in &samples {
        let _ = writeln!(t, "  {fam} {action}: {env}");
    }
    (t, mismatches)
}

#[test]
fn real_kernel_suite() {
    let set = std::env::var("HOTPLUG_REALKERNEL").unwrap_or_default();
    if set == "off" {
        return eprintln!("SKIPPED real-kernel suite: HOTPLUG_REALKERNEL=off");
    }
    let full = set == "full";
    let started = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        return skip("not root");
    }
    for (tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("modprobe", "kmod"),
        ("depmod", "kmod"),
        ("udevadm", "udev"),
        ("ip", "iproute2"),
        ("ldd", "libc-bin"),
        ("dpkg-deb", "dpkg"),
    ] {
        if which(tool).is_none() {
            return skip(&format!("{tool} is missing (apt-get install {pkg})"));
        }
    }
    if !Path::new("/lib/systemd/systemd-udevd").exists() {
        return skip("/lib/systemd/systemd-udevd is missing (apt-get install udev)");
    }
    let work = Path::new(MANIFEST).join("target/realkernel");
    fs::create_dir_all(&work).unwrap();
    // One run at a time (two `cargo test`s at once would share the dirs and
    // the 2 cores): the second waits.
    let lock = fs::File::create(work.join("lock")).unwrap();
    let _lock = match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((lock, _)) => {
            eprintln!("realkernel: waiting for another run (target/realkernel/lock)");
            Flock::lock(lock, FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .unwrap()
        }
    };
    let (kroot, kver) = match kernel(&work.join("kernel")) {
        Ok(k) => k,
        Err(e) => return skip(&format!("no kernel: {e}")),
    };

    // The release binary, as installed (built here if stale or missing), or
    // another build to compare (HOTPLUG_REALKERNEL_BIN).
    let hook = match std::env::var_os("HOTPLUG_REALKERNEL_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let build = Command::new(env!("CARGO"))
                .args(["build", "--release", "--locked", "--bin", "hotplug-hook"])
                .current_dir(MANIFEST)
                .status()
                .unwrap();
            assert!(build.success(), "cargo build --release failed");
            Path::new(MANIFEST).join("target/release/hotplug-hook")
        }
    };

    let t = Instant::now();
    let initrd = build_initramfs(&work, &kroot, &kver, &hook);
    eprintln!(
        "realkernel: kernel {kver}, initramfs {} MB in {:.1} s",
        fs::metadata(&initrd).unwrap().len() >> 20,
        t.elapsed().as_secs_f64()
    );
    let vmlinuz = kroot.join(format!("boot/vmlinuz-{kver}"));
    let boots: Vec<Boot> = [Mode::Acpi, Mode::Native]
        .into_iter()
        .map(|m| boot(&work, &vmlinuz, &initrd, m, full))
        .collect();
    let (mut table, mismatches) = report(&boots, started.elapsed());
    table.insert_str(
        0,
        &format!(
            "hook binary {}, kernel {kver}, {} set\n\n",
            hook.display(),
            if full { "full" } else { "default" }
        ),
    );
    println!("{table}");
    fs::write(work.join("report.txt"), &table).unwrap();
    eprintln!(
        "realkernel: report in {}",
        work.join("report.txt").display()
    );
    assert_eq!(
        mismatches, 0,
        "{mismatches} mismatch(es) under the real kernel (table above; consoles in target/realkernel/run-*/)"
    );
}
