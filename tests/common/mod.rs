//! Test fixtures: realistic sysfs trees in temp dirs, mutated the way the
//! kernel mutates them, and a runner for the real binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

/// Built in or loadable: a built-in module has `/sys/module/<m>` but no
/// `initstate`, and can never be unloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModKind {
    Loadable,
    Builtin,
}

/// A sysfs-shaped tree under a temp dir. Paths are sysfs-relative
/// (`/devices/...`).
pub struct Tree {
    _dir: TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
}

/// `from` and `to` are absolute paths; the relative path from `from`'s dir.
fn relative(from_link: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from_link.parent().unwrap().components().collect();
    let to_c: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to_c).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to_c[common..] {
        out.push(c);
    }
    out
}

impl Tree {
    pub fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sys");
        let state = dir.path().join("state");
        for d in [
            "class/net",
            "bus/pci/slots",
            "module",
            "devices/virtual/net",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        Tree {
            _dir: dir,
            root,
            state,
        }
    }

    /// A scratch path beside the tree (for FIFOs, outputs, configs).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.root.parent().unwrap().join(name)
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// A relative symlink at `link` pointing at `target` (both sysfs-relative).
    pub fn link(&self, link: &str, target: &str) {
        let l = self.p(link);
        fs::create_dir_all(l.parent().unwrap()).unwrap();
        let _ = fs::remove_file(&l);
        symlink(relative(&l, &self.p(target)), &l).unwrap();
    }

    pub fn rm(&self, rel: &str) {
        let p = self.p(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(p).unwrap(),
            Ok(_) => fs::remove_file(p).unwrap(),
            Err(_) => {}
        }
    }

    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.p(rel)).is_ok()
    }

    /// A registered driver and its module.
    pub fn driver(&self, bus: &str, driver: &str, module: &str, kind: ModKind) {
        fs::create_dir_all(self.p(&format!("/bus/{bus}/drivers/{driver}"))).unwrap();
        fs::create_dir_all(self.p(&format!("/module/{module}/drivers"))).unwrap();
        if kind == ModKind::Loadable {
            self.write(&format!("/module/{module}/initstate"), "live\n");
            self.write(&format!("/module/{module}/refcnt"), "0\n");
        }
        self.link(
            &format!("/bus/{bus}/drivers/{driver}/module"),
            &format!("/module/{module}"),
        );
        self.link(
            &format!("/module/{module}/drivers/{bus}:{driver}"),
            &format!("/bus/{bus}/drivers/{driver}"),
        );
    }

    /// A bus device at `devpath`, bound to `driver` if given.
    pub fn device(&self, devpath: &str, bus: &str, driver: Option<&str>) {
        fs::create_dir_all(self.p(devpath)).unwrap();
        fs::create_dir_all(self.p(&format!("/bus/{bus}/devices"))).unwrap();
        self.link(&format!("{devpath}/subsystem"), &format!("/bus/{bus}"));
        let name = devpath.rsplit('/').next().unwrap();
        self.link(&format!("/bus/{bus}/devices/{name}"), devpath);
        if let Some(d) = driver {
            self.bind(devpath, bus, d);
        }
    }

    pub fn bind(&self, devpath: &str, bus: &str, driver: &str) {
        let name = devpath.rsplit('/').next().unwrap();
        self.link(&format!("/bus/{bus}/drivers/{driver}/{name}"), devpath);
        self.link(
            &format!("{devpath}/driver"),
            &format!("/bus/{bus}/drivers/{driver}"),
        );
    }

    /// A net device under `parent` (or a virtual one when `parent` is
    /// `/devices/virtual`).
    pub fn netdev(&self, parent: &str, iface: &str, mac: &str, ifindex: u32) -> String {
        let devpath = format!("{parent}/net/{iface}");
        self.write(&format!("{devpath}/address"), &format!("{mac}\n"));
        self.write(&format!("{devpath}/ifindex"), &format!("{ifindex}\n"));
        self.write(&format!("{devpath}/type"), "1\n");
        self.write(&format!("{devpath}/addr_assign_type"), "0\n");
        self.write(&format!("{devpath}/operstate"), "up\n");
        self.link(&format!("{devpath}/subsystem"), "/class/net");
        if !parent.starts_with("/devices/virtual") {
            self.link(&format!("{devpath}/device"), parent);
        }
        self.link(&format!("/class/net/{iface}"), &devpath);
        devpath
    }

    // --- realistic machines -------------------------------------------

    /// EC2 Nitro: `ena` on PCI at `0000:00:<slot>.0`, in hotplug slot `<slot>`.
    pub fn ena(&self, slot: u8, iface: &str, mac: &str, ifindex: u32, kind: ModKind) -> String {
        if !self.exists("/bus/pci/drivers/ena") {
            self.driver("pci", "ena", "ena", kind);
        }
        let parent = format!("/devices/pci0000:00/0000:00:{slot:02x}.0");
        self.device(&parent, "pci", Some("ena"));
        self.write(&format!("{parent}/vendor"), "0x1d0f\n");
        self.write(&format!("{parent}/device"), "0xec20\n");
        self.write(
            &format!("/bus/pci/slots/{slot}/address"),
            &format!("0000:00:{slot:02x}\n"),
        );
        self.write(&format!("/bus/pci/slots/{slot}/power"), "1\n");
        self.netdev(&parent, iface, mac, ifindex)
    }

    /// Intel VF (`ixgbevf`) on PCI.
    pub fn ixgbevf(&self, slot: u8, iface: &str, mac: &str, ifindex: u32) -> String {
        if !self.exists("/bus/pci/drivers/ixgbevf") {
            self.driver("pci", "ixgbevf", "ixgbevf", ModKind::Loadable);
        }
        let parent = format!("/devices/pci0000:00/0000:00:{slot:02x}.0");
        self.device(&parent, "pci", Some("ixgbevf"));
        self.write(&format!("{parent}/vendor"), "0x8086\n");
        self.write(&format!("{parent}/device"), "0x10ed\n");
        self.netdev(&parent, iface, mac, ifindex)
    }

    /// Xen PV: `vif-N` on the xen bus, driver `vif`, module `xen_netfront`.
    pub fn xen_vif(&self, n: u32, iface: &str, mac: &str, ifindex: u32) -> String {
        if !self.exists("/bus/xen/drivers/vif") {
            self.driver("xen", "vif", "xen_netfront", ModKind::Loadable);
        }
        let parent = format!("/devices/vif-{n}");
        self.device(&parent, "xen", Some("vif"));
        self.write(&format!("{parent}/nodename"), &format!("device/vif/{n}\n"));
        self.netdev(&parent, iface, mac, ifindex)
    }

    /// virtio-net: `virtioN` under a PCI function.
    pub fn virtio_net(&self, slot: u8, n: u32, iface: &str, mac: &str, ifindex: u32) -> String {
        if !self.exists("/bus/virtio/drivers/virtio_net") {
            self.driver("virtio", "virtio_net", "virtio_net", ModKind::Loadable);
        }
        if !self.exists("/bus/pci/drivers/virtio-pci") {
            self.driver("pci", "virtio-pci", "virtio_pci", ModKind::Builtin);
        }
        let pci = format!("/devices/pci0000:00/0000:00:{slot:02x}.0");
        self.device(&pci, "pci", Some("virtio-pci"));
        let parent = format!("{pci}/virtio{n}");
        self.device(&parent, "virtio", Some("virtio_net"));
        self.netdev(&parent, iface, mac, ifindex)
    }

    pub fn veth(&self, iface: &str, mac: &str, ifindex: u32) -> String {
        self.netdev("/devices/virtual", iface, mac, ifindex)
    }

    /// A veth pair: each end's `iflink` is the other's ifindex.
    pub fn veth_pair(&self, a: (&str, u32), b: (&str, u32)) -> (String, String) {
        let da = self.veth(a.0, "0a:00:00:00:00:0a", a.1);
        let db = self.veth(b.0, "0a:00:00:00:00:0b", b.1);
        self.write(&format!("{da}/iflink"), &format!("{}\n", b.1));
        self.write(&format!("{db}/iflink"), &format!("{}\n", a.1));
        (da, db)
    }

    // --- what the kernel does ------------------------------------------

    fn parent_of(devpath: &str) -> String {
        let (p, _) = devpath.rsplit_once("/net/").unwrap();
        p.to_string()
    }

    fn bus_of(&self, parent: &str) -> String {
        fs::read_link(self.p(&format!("{parent}/subsystem")))
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The net device is unregistered. Like the kernel's
    /// `cleanup_glue_dir()`, the parent's `net` directory goes with its last
    /// net device.
    pub fn drop_netdev(&self, devpath: &str) {
        self.hide_netdev(devpath);
        let net_dir = self.p(devpath.rsplit_once('/').unwrap().0);
        let _ = fs::remove_dir(net_dir);
    }

    /// The net device is no longer visible in this namespace; the parent's
    /// `net` directory stays.
    fn hide_netdev(&self, devpath: &str) {
        let iface = devpath.rsplit('/').next().unwrap();
        self.rm(&format!("/class/net/{iface}"));
        self.rm(devpath);
    }

    /// Unbind as drivers/base/dd.c does it: the `driver` links go first; the
    /// driver's remove() then unregisters the net device.
    pub fn unbind(&self, devpath: &str) {
        let parent = Self::parent_of(devpath);
        let link = self.p(&format!("{parent}/driver"));
        if let Ok(target) = fs::read_link(&link) {
            let driver = target.file_name().unwrap().to_string_lossy().into_owned();
            let bus = self.bus_of(&parent);
            let name = parent.rsplit('/').next().unwrap();
            self.rm(&format!("/bus/{bus}/drivers/{driver}/{name}"));
        }
        self.rm(&format!("{parent}/driver"));
        self.drop_netdev(devpath);
    }

    /// `modprobe -r` has started: the module is `going`.
    pub fn module_going(&self, module: &str) {
        self.write(&format!("/module/{module}/initstate"), "going\n");
        self.write(&format!("/module/{module}/refcnt"), "-1\n");
    }

    /// `modprobe -r` has finished: driver directory and module are gone.
    pub fn module_freed(&self, bus: &str, driver: &str, module: &str) {
        self.rm(&format!("/bus/{bus}/drivers/{driver}"));
        self.rm(&format!("/module/{module}"));
    }

    /// A whole `modprobe -r`: going, then every device unbound, then freed.
    pub fn unload(&self, bus: &str, driver: &str, module: &str, devpaths: &[&str]) {
        self.module_going(module);
        for d in devpaths {
            self.unbind(d);
        }
        self.module_freed(bus, driver, module);
    }

    /// PCI hot-unplug (ENI detach): unbind, then the device itself goes.
    pub fn hot_unplug(&self, devpath: &str) {
        self.unbind(devpath);
        let parent = Self::parent_of(devpath);
        let bus = self.bus_of(&parent);
        let name = parent.rsplit('/').next().unwrap().to_string();
        self.rm(&format!("/bus/{bus}/devices/{name}"));
        self.rm(&parent);
    }

    /// `ip link set <iface> netns <ns>`: gone from the host, parent still
    /// bound. The net device still exists: sysfs hides it from listings but
    /// counts it in `net/`'s link count; a dot-directory stands for it here.
    pub fn netns_move(&self, devpath: &str) {
        let (dir, iface) = devpath.rsplit_once('/').unwrap();
        self.hide_netdev(devpath);
        fs::create_dir_all(self.p(&format!("{dir}/.in-netns-{iface}"))).unwrap();
    }

    /// Unbinding a virtio NIC's PCI function from `virtio-pci` (or unloading
    /// `virtio_pci`): the virtio device under it goes, with its net device.
    pub fn unbind_virtio_transport(&self, devpath: &str) {
        let virtio = Self::parent_of(devpath);
        let pci = virtio.rsplit_once('/').unwrap().0.to_string();
        self.unbind(devpath);
        let name = virtio.rsplit('/').next().unwrap().to_string();
        self.rm(&format!("/bus/virtio/devices/{name}"));
        self.rm(&virtio);
        let link = self.p(&format!("{pci}/driver"));
        if let Ok(target) = fs::read_link(&link) {
            let driver = target.file_name().unwrap().to_string_lossy().into_owned();
            let fn_name = pci.rsplit('/').next().unwrap();
            self.rm(&format!("/bus/pci/drivers/{driver}/{fn_name}"));
        }
        self.rm(&format!("{pci}/driver"));
    }

    /// `ip link set <old> name <new>`.
    pub fn rename(&self, devpath: &str, new: &str) -> String {
        let parent = Self::parent_of(devpath);
        let old = devpath.rsplit('/').next().unwrap();
        let new_path = format!("{parent}/net/{new}");
        fs::rename(self.p(devpath), self.p(&new_path)).unwrap();
        self.rm(&format!("/class/net/{old}"));
        self.link(&format!("/class/net/{new}"), &new_path);
        new_path
    }

    pub fn slot_power(&self, slot: u8, on: bool) {
        self.write(
            &format!("/bus/pci/slots/{slot}/power"),
            if on { "1\n" } else { "0\n" },
        );
    }

    /// Runs a mutation on another thread after `ms`, to land while the hook
    /// is in its settle window.
    pub fn after(&self, ms: u64, f: impl FnOnce(&Path) + Send + 'static) -> JoinHandle<()> {
        let root = self.root.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(ms));
            f(&root);
        })
    }

    // --- running the real binary -----------------------------------------

    /// `hotplug-hook <args>` with a cleared environment plus `env`, and this
    /// tree's sysfs root and state dir.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        self.command_as(Path::new(env!("CARGO_BIN_EXE_hotplug-hook")), args, env)
    }

    /// `command`, running the binary through another path (e.g. a symlink
    /// named `hook-hotplug`).
    pub fn command_as(&self, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .arg("--sysfs-root")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(&self.state)
            // Never pick up a host's /etc/hotplug-hook/config.json.
            .arg("--config")
            .arg(self.empty_config())
            // Not a systemd host unless a test says so.
            .arg("--systemd-dir")
            .arg(self.scratch("no-systemd"))
            // No IMDS unless a test points at its double (`--imds`).
            .arg("--imds=false")
            // Log lines on stderr unless a test asks for a socket.
            .arg("--log=stderr")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        cmd
    }

    fn empty_config(&self) -> PathBuf {
        let p = self.scratch("empty-config.json");
        if !p.exists() {
            fs::write(&p, "{}").unwrap();
        }
        p
    }

    /// udev's environment for a net event on `devpath`.
    pub fn udev_env(
        action: &str,
        devpath: &str,
        ifindex: u32,
        driver: &str,
    ) -> Vec<(String, String)> {
        let iface = devpath.rsplit('/').next().unwrap();
        vec![
            ("ACTION".into(), action.into()),
            ("SUBSYSTEM".into(), "net".into()),
            ("DEVPATH".into(), devpath.into()),
            ("INTERFACE".into(), iface.into()),
            ("IFINDEX".into(), ifindex.to_string()),
            ("ID_NET_DRIVER".into(), driver.into()),
            ("SEQNUM".into(), "1234".into()),
        ]
    }

    /// `handle` as udev would run it, with extra flags and environment;
    /// output captured, ready to run or spawn.
    pub fn udev_command(
        &self,
        action: &str,
        devpath: &str,
        ifindex: u32,
        driver: &str,
        flags: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Command {
        let env = Self::udev_env(action, devpath, ifindex, driver);
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra_env);
        let mut args = flags.to_vec();
        args.push("handle");
        let mut cmd = self.command(&args, &env);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// `handle` as udev would run it, with extra flags.
    pub fn udev(
        &self,
        action: &str,
        devpath: &str,
        ifindex: u32,
        driver: &str,
        flags: &[&str],
    ) -> Output {
        self.udev_command(action, devpath, ifindex, driver, flags, &[])
            .output()
            .unwrap()
    }

    /// `n` Nitro ENIs: slot `3+i`, `ens<3+i>`, MAC `02:a1:b2:c3:d4:<i>`,
    /// ifindex `2+i`; recorded by `scan`. Returns their devpaths.
    pub fn fleet(&self, n: u8) -> Vec<String> {
        let devpaths = self.enis(n);
        ok(&self.run(&["scan"], &[]));
        devpaths
    }

    /// The ENIs of [`Tree::fleet`], not recorded.
    pub fn enis(&self, n: u8) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.ena(
                    3 + i,
                    &format!("ens{}", 3 + i),
                    &format!("02:a1:b2:c3:d4:{i:02x}"),
                    2 + u32::from(i),
                    ModKind::Loadable,
                )
            })
            .collect()
    }

    /// Runs `handle` for every `(action, devpath, ifindex)` at once (driver
    /// `ena`) and waits for all; each must exit 0.
    pub fn handle_all(&self, events: &[(&str, &str, u32)], flags: &[&str]) {
        let children: Vec<_> = events
            .iter()
            .map(|(action, devpath, ifindex)| {
                self.udev_command(action, devpath, *ifindex, "ena", flags, &[])
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            ok(&c.wait_with_output().unwrap());
        }
    }

    /// A systemd host whose `systemctl` runs `body` (sh): returns the PATH
    /// that finds it and the flag pair pointing at the systemd dir.
    pub fn fake_systemd(&self, body: &str) -> (String, [String; 2]) {
        let bin = self.scratch("bin");
        let systemd = self.scratch("systemd-system");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&systemd).unwrap();
        let exe = bin.join("systemctl");
        fs::write(&exe, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        (
            format!("{}:/usr/bin:/bin", bin.display()),
            ["--systemd-dir".into(), systemd.display().to_string()],
        )
    }

    /// The one job file `handle` left for the worker.
    pub fn only_job(&self) -> PathBuf {
        let jobs: Vec<PathBuf> = fs::read_dir(self.state.join("jobs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        jobs.into_iter().next().unwrap()
    }

    /// ens5 (Nitro, `ena` loadable), recorded, caught mid `modprobe -r ena`:
    /// module going, parent unbound. Returns the tree and ens5's devpath.
    pub fn mid_unload() -> (Tree, String) {
        let t = Tree::new();
        let ens5 = t.ena(5, "ens5", "02:a1:b2:c3:d4:05", 2, ModKind::Loadable);
        ok(&t.run(&["scan"], &[]));
        t.module_going("ena");
        t.unbind(&ens5);
        (t, ens5)
    }

    /// A command that appends `$HOTPLUG_VERDICT` to `<dir>/<interface>`:
    /// returns the script and the dir.
    pub fn verdict_recorder(&self) -> (PathBuf, PathBuf) {
        let script = self.scratch("verdict-recorder.sh");
        let dir = self.scratch("ran");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$HOTPLUG_VERDICT\" >> \"{}/$HOTPLUG_INTERFACE\"\n",
                dir.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        (script, dir)
    }

    /// The worker entries of the journal, once there are at least `n`
    /// (waiting at most `secs`).
    pub fn worker_entries(&self, n: usize, secs: u64) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let w: Vec<Value> = self
                .journal()
                .into_iter()
                .filter(|e| e["kind"] == "worker")
                .collect();
            if w.len() >= n {
                return w;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {n} worker entries",
                w.len()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The journal's entries, oldest first.
    pub fn journal(&self) -> Vec<Value> {
        let Ok(text) = fs::read_to_string(self.state.join("journal.jsonl")) else {
            return Vec::new();
        };
        text.lines()
            .map(|l| serde_json::from_str(l).expect("journal line is JSON"))
            .collect()
    }

    pub fn last_verdict(&self) -> String {
        let j = self.journal();
        let e = j
            .iter()
            .rev()
            .find(|e| e["kind"] == "event")
            .expect("an event entry");
        e["verdict"].as_str().unwrap().to_string()
    }

    /// The record named `iface` (records are files keyed by MAC and device).
    pub fn record(&self, iface: &str) -> Option<Value> {
        self.records().into_iter().find(|r| r["name"] == iface)
    }

    /// Every readable record (`ifaces/<mac>/<device>.json`), with its file
    /// path under `path`.
    pub fn records(&self) -> Vec<Value> {
        let Ok(rd) = fs::read_dir(self.state.join("ifaces")) else {
            return Vec::new();
        };
        let files: Vec<fs::DirEntry> = rd
            .flatten()
            .filter_map(|d| fs::read_dir(d.path()).ok())
            .flat_map(|rd| rd.flatten())
            .collect();
        let mut out: Vec<Value> = files
            .into_iter()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| {
                let mut v: Value =
                    serde_json::from_str(&fs::read_to_string(e.path()).ok()?).ok()?;
                v["path"] = Value::String(e.path().display().to_string());
                Some(v)
            })
            .collect();
        out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        out
    }

    /// The record file of `iface`.
    pub fn record_file(&self, iface: &str) -> PathBuf {
        PathBuf::from(
            self.record(iface)
                .unwrap_or_else(|| panic!("no record of {iface}"))["path"]
                .as_str()
                .unwrap(),
        )
    }

    /// Every file under the state dir with its content, to prove "no change".
    pub fn state_snapshot(&self) -> HashMap<PathBuf, Vec<u8>> {
        let mut out = HashMap::new();
        let mut stack = vec![self.state.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.insert(p.clone(), fs::read(&p).unwrap_or_default());
                }
            }
        }
        out
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit 0 and returns stderr, for messages.
pub fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stderr(o)
}
pub mod clouds;
pub mod imds;
