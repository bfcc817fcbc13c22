//! The package as users install it, built from the one packaging source
//! (`[package.metadata.deb]` in Cargo.toml, through `make deb`, which
//! generates the completions first): its files, modes and owners, the
//! `/usr/sbin` link, completions, the example config (parsed by the real
//! binary), `systemd-analyze verify` of the packaged units, the maintainer
//! scripts that enable them, the same files as `make install`; the arm64
//! package (cross-built, its binary run under qemu-user on the README demo);
//! and the packaged units under a real systemd as PID 1 (QEMU, the host's
//! systemd over a 9p root, the package's own postinst).
//!
//! Needs cargo-deb (`cargo install cargo-deb --locked`, which `.ci/run`
//! does); without it the package tests are skipped with a message, except in
//! CI (env `CI`), where it is installed if missing. The arm64 package needs
//! the Rust target (`rustup target add aarch64-unknown-linux-gnu`),
//! `gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static`; the boot
//! needs root, `qemu-system-x86 busybox-static kmod cpio` and Debian's kernel
//! (the one tests/realkernel.rs caches in `target/realkernel/kernel/`).
//! `HOTPLUG_REALKERNEL=off` skips the boot too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const ARM64: &str = "aarch64-unknown-linux-gnu";

fn root() -> &'static Path {
    Path::new(ROOT)
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// A prerequisite is missing: a message, or in CI a failure.
fn skip(what: &str, why: &str) {
    assert!(!in_ci(), "{what}: {why} in CI (.ci/run installs it)");
    eprintln!("SKIPPED {what}: {why}");
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", text(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `PATH` with cargo's own bin dir (where `cargo install` puts cargo-deb).
fn path_env() -> String {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|_| PathBuf::from("/root/.cargo"));
    format!(
        "{}:{}",
        home.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn cargo_deb_present() -> bool {
    Command::new("cargo-deb")
        .arg("--version")
        .env("PATH", path_env())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// cargo-deb is there, or (in CI) installed now; `false` means skip.
fn cargo_deb() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        if cargo_deb_present() {
            return true;
        }
        if !in_ci() {
            eprintln!(
                "SKIPPED package tests: cargo-deb is not installed (cargo install cargo-deb --locked)"
            );
            return false;
        }
        let t = Instant::now();
        let out = Command::new("cargo")
            .args(["install", "cargo-deb", "--locked"])
            .env("PATH", path_env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo install cargo-deb failed:\n{}",
            text(&out)
        );
        eprintln!("installed cargo-deb in {:.0} s", t.elapsed().as_secs_f64());
        true
    })
}

/// `make <target>` in the crate, timed; the .deb it leaves for `arch`.
fn make_deb(target: &str, arch: &str) -> PathBuf {
    let t = Instant::now();
    let out = Command::new("make")
        .arg("-C")
        .arg(root())
        .arg(target)
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "make {target}:\n{}", text(&out));
    eprintln!("make {target}: {:.1} s", t.elapsed().as_secs_f64());
    let deb = root().join(format!("target/debian/hotplug-hook_{VERSION}-1_{arch}.deb"));
    assert!(deb.exists(), "make {target} left no {}", deb.display());
    deb
}

/// The amd64 package, built once per run (tests share it).
fn amd64_deb() -> Option<&'static Path> {
    static DEB: OnceLock<Option<PathBuf>> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    DEB.get_or_init(|| {
        if !has("make") || !has("dpkg-deb") {
            skip("package tests", "make or dpkg-deb is missing");
            return None;
        }
        cargo_deb().then(|| make_deb("deb", "amd64"))
    })
    .as_deref()
}

/// The package unpacked into a temp dir (files, and control files in `DEBIAN/`).
fn unpack(deb: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir.path()));
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(dir.path().join("DEBIAN")));
    dir
}

/// `dpkg-deb -c`: path → (mode string, owner, link target).
fn listing(deb: &Path) -> BTreeMap<String, (String, String, Option<String>)> {
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // perms owner size date time path [-> target]
            let path = f[5].trim_start_matches("./").to_string();
            let link = (f.get(6) == Some(&"->")).then(|| f[7].to_string());
            (path, (f[0].to_string(), f[1].to_string(), link))
        })
        .collect()
}

/// Every file (not directory) the package must hold, with its mode.
const FILES: [(&str, &str); 16] = [
    ("usr/libexec/hotplug-hook", "-rwxr-xr-x"),
    ("usr/sbin/hotplug-hook", "lrwxrwxrwx"),
    ("usr/lib/udev/rules.d/90-hotplug-hook.rules", "-rw-r--r--"),
    (
        "usr/lib/systemd/system/hotplug-hook-scan.service",
        "-rw-r--r--",
    ),
    (
        "usr/lib/systemd/system/hotplug-hook-reconcile.service",
        "-rw-r--r--",
    ),
    (
        "usr/lib/systemd/system/hotplug-hook-worker@.service",
        "-rw-r--r--",
    ),
    ("usr/share/man/man8/hotplug-hook.8.gz", "-rw-r--r--"),
    (
        "usr/share/bash-completion/completions/hotplug-hook",
        "-rw-r--r--",
    ),
    (
        "usr/share/zsh/vendor-completions/_hotplug-hook",
        "-rw-r--r--",
    ),
    (
        "usr/share/fish/vendor_completions.d/hotplug-hook.fish",
        "-rw-r--r--",
    ),
    (
        "usr/share/doc/hotplug-hook/config.example.json",
        "-rw-r--r--",
    ),
    ("usr/share/doc/hotplug-hook/config.example.md", "-rw-r--r--"),
    ("usr/share/doc/hotplug-hook/README.md", "-rw-r--r--"),
    ("usr/share/doc/hotplug-hook/copyright", "-rw-r--r--"),
    // Directories whose modes matter too.
    ("usr/lib/systemd/system/", "drwxr-xr-x"),
    ("usr/share/doc/hotplug-hook/", "drwxr-xr-x"),
];

#[test]
fn package_holds_every_file_with_its_mode_and_owner() {
    let Some(deb) = amd64_deb() else { return };
    let list = listing(deb);
    for (path, mode) in FILES {
        let Some((m, owner, _)) = list.get(path) else {
            panic!("{path} is not in the package:\n{list:#?}");
        };
        assert_eq!(m, mode, "{path}");
        assert_eq!(owner, "0/0", "{path} is not root's");
    }
    let expected: BTreeSet<&str> = FILES.iter().map(|(p, _)| *p).collect();
    let extra: Vec<&String> = list
        .iter()
        .filter(|(p, (m, _, _))| !m.starts_with('d') && !expected.contains(p.as_str()))
        .map(|(p, _)| p)
        .collect();
    assert!(
        extra.is_empty(),
        "unexpected files in the package: {extra:?}"
    );
    assert!(
        list.values().all(|(_, owner, _)| owner == "0/0"),
        "{list:#?}"
    );

    // /usr/sbin/hotplug-hook, on PATH, is the binary the rule runs.
    let sbin = list["usr/sbin/hotplug-hook"].2.as_deref().unwrap();
    let resolved = Path::new("/usr/sbin").join(sbin);
    let resolved: PathBuf = resolved.components().fold(PathBuf::new(), |mut p, c| {
        match c {
            std::path::Component::ParentDir => {
                p.pop();
            }
            c => p.push(c),
        }
        p
    });
    assert_eq!(resolved, Path::new("/usr/libexec/hotplug-hook"));

    let x = unpack(deb);
    let d = x.path();
    let rule = fs::read_to_string(d.join("usr/lib/udev/rules.d/90-hotplug-hook.rules")).unwrap();
    assert!(
        rule.contains("RUN+=\"/usr/libexec/hotplug-hook handle\""),
        "{rule}"
    );
    let out = run(Command::new(d.join("usr/libexec/hotplug-hook")).arg("--version"));
    assert_eq!(out.trim(), format!("hotplug-hook {VERSION}"));

    // The completions are the binary's own, for every subcommand.
    let bin = env!("CARGO_BIN_EXE_hotplug-hook");
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/hotplug-hook"),
        ("zsh", "usr/share/zsh/vendor-completions/_hotplug-hook"),
        (
            "fish",
            "usr/share/fish/vendor_completions.d/hotplug-hook.fish",
        ),
    ] {
        let packaged = fs::read_to_string(d.join(path)).unwrap();
        let fresh = run(Command::new(bin).args(["--config", "/dev/null", "completions", shell]));
        assert!(
            packaged == fresh,
            "{path} differs from `hotplug-hook completions {shell}`"
        );
        for word in [
            "handle",
            "classify",
            "scan",
            "status",
            "reconcile",
            "sysfs-root",
        ] {
            assert!(packaged.contains(word), "{path} lacks {word}");
        }
    }
    for f in ["config.example.json", "config.example.md"] {
        assert_eq!(
            fs::read(d.join("usr/share/doc/hotplug-hook").join(f)).unwrap(),
            fs::read(root().join("contrib/config").join(f)).unwrap(),
            "{f}"
        );
    }
    // The packaged example config is read by the packaged binary.
    let out = Command::new(d.join("usr/sbin/hotplug-hook"))
        .arg("--config")
        .arg(d.join("usr/share/doc/hotplug-hook/config.example.json"))
        .args(["--state-dir", "/nonexistent/hotplug-hook", "status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let control = fs::read_to_string(d.join("DEBIAN/control")).unwrap();
    for want in [
        "Package: hotplug-hook\n",
        &format!("Version: {VERSION}-1\n"),
        "Architecture: amd64\n",
        "Section: admin\n",
    ] {
        assert!(control.contains(want), "{want:?} not in\n{control}");
    }
    let depends = control
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap();
    assert!(
        depends.contains("libc6") && depends.contains("udev"),
        "{depends}"
    );
    let synopsis = control
        .lines()
        .find_map(|l| l.strip_prefix("Description: "))
        .unwrap();
    assert!(synopsis.len() <= 80, "synopsis too long: {synopsis:?}");
}

#[test]
fn maintainer_scripts_enable_the_units() {
    let Some(deb) = amd64_deb() else { return };
    let x = unpack(deb);
    let script = |name: &str| {
        let p = x.path().join("DEBIAN").join(name);
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{name}");
        fs::read_to_string(p).unwrap()
    };
    let postinst = script("postinst");
    for unit in [
        "hotplug-hook-scan.service",
        "hotplug-hook-reconcile.service",
    ] {
        assert!(
            postinst.contains(&format!("deb-systemd-helper enable {unit}")),
            "postinst does not enable {unit}:\n{postinst}"
        );
        assert!(
            script("postrm").contains(&format!("deb-systemd-helper purge {unit}")),
            "postrm does not purge {unit}"
        );
        assert!(
            script("prerm").contains(&format!("deb-systemd-invoke stop {unit}")),
            "prerm does not stop {unit}"
        );
    }
    // scan starts at once (the NICs present now need records); reconcile at
    // the next boot, after cloud-init; the worker template is never enabled.
    assert!(postinst.contains("deb-systemd-invoke start hotplug-hook-scan.service"));
    assert!(!postinst.contains("deb-systemd-invoke start hotplug-hook-reconcile.service"));
    assert!(!postinst.contains("hotplug-hook-worker@"));
    // Shell that dash accepts.
    for name in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh")
            .arg("-n")
            .arg(x.path().join("DEBIAN").join(name)));
    }
}

#[test]
fn packaged_units_pass_systemd_analyze_verify() {
    let Some(deb) = amd64_deb() else { return };
    if !has("systemd-analyze") {
        skip("systemd-analyze verify", "systemd-analyze is missing");
        return;
    }
    let x = unpack(deb);
    let units = x.path().join("usr/lib/systemd/system");
    let bin = x.path().join("usr/libexec/hotplug-hook");
    // verify wants ExecStart's binary to exist: point copies at the packaged one.
    let dir = tempfile::tempdir().unwrap();
    let mut args = Vec::new();
    for name in [
        "hotplug-hook-scan.service",
        "hotplug-hook-reconcile.service",
        "hotplug-hook-worker@.service",
    ] {
        let unit = fs::read_to_string(units.join(name)).unwrap();
        assert!(
            unit.contains("ExecStart=/usr/libexec/hotplug-hook "),
            "{name}"
        );
        let path = dir.path().join(name);
        fs::write(
            &path,
            unit.replace("/usr/libexec/hotplug-hook", bin.to_str().unwrap()),
        )
        .unwrap();
        if !name.contains('@') {
            args.push(path);
        }
    }
    let instance = dir
        .path()
        .join("hotplug-hook-worker@run-hotplug\\x2dhook-jobs-1.json.service");
    std::os::unix::fs::symlink(dir.path().join("hotplug-hook-worker@.service"), &instance).unwrap();
    args.push(instance);
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&args)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let t = text(&out);
    let about_units: Vec<&str> = t.lines().filter(|l| l.contains("hotplug-hook-")).collect();
    assert!(about_units.is_empty(), "systemd-analyze verify:\n{t}");
    assert!(out.status.success(), "systemd-analyze verify:\n{t}");
}

/// `make install` and the package ship the same files with the same content
/// (the package's man page gzipped; its copyright file is cargo-deb's own).
#[test]
fn package_and_make_install_ship_the_same_files() {
    let Some(deb) = amd64_deb() else { return };
    let x = unpack(deb);
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new("make")
        .arg("-C")
        .arg(root())
        .arg("install")
        .arg(format!("DESTDIR={}", dest.path().display()))
        .arg("BIN=target/release/hotplug-hook")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let files = |dir: &Path| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                if rel == "DEBIAN" {
                    continue;
                }
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                } else {
                    out.insert(rel);
                }
            }
        }
        out
    };
    let packaged: BTreeSet<String> = files(x.path())
        .into_iter()
        .filter(|f| f != "usr/share/doc/hotplug-hook/copyright")
        .map(|f| f.trim_end_matches(".gz").to_string())
        .collect();
    let installed = files(dest.path());
    assert_eq!(packaged, installed, "the .deb and `make install` differ");
    for f in &installed {
        if f.ends_with(".8") || f == "usr/sbin/hotplug-hook" {
            continue;
        }
        assert!(
            fs::read(x.path().join(f)).unwrap() == fs::read(dest.path().join(f)).unwrap(),
            "{f} differs between the .deb and `make install`"
        );
    }
}

/// The shipped example config is valid to copy: the real binary reads it
/// (`status`, and a `classify` dry run), and so is every JSON example in
/// the commented text beside it.
#[test]
fn example_configs_parse_with_the_real_binary() {
    let bin = env!("CARGO_BIN_EXE_hotplug-hook");
    let dir = tempfile::tempdir().unwrap();
    let md = fs::read_to_string(root().join("contrib/config/config.example.md")).unwrap();
    let mut configs = vec![root().join("contrib/config/config.example.json")];
    for (i, block) in md.split("```json\n").skip(1).enumerate() {
        let json = &block[..block.find("```").unwrap()];
        let p = dir.path().join(format!("md-{i}.json"));
        fs::write(&p, json).unwrap();
        configs.push(p);
    }
    assert!(configs.len() >= 4, "config.example.md lost its examples");
    let example = fs::read_to_string(&configs[0]).unwrap();
    assert!(
        md.contains(&format!("```json\n{example}```")),
        "config.example.md must show config.example.json as it is"
    );
    let keys: Vec<String> = serde_json::from_str::<Value>(&example)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for k in &keys {
        assert!(
            md.lines()
                .any(|l| l.starts_with("- ") && l.contains(&format!("`{k}`"))),
            "config.example.md does not explain {k}"
        );
    }
    for cfg in &configs {
        let out = Command::new(bin)
            .arg("--config")
            .arg(cfg)
            .args(["--state-dir", "/nonexistent/hotplug-hook", "status"])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", cfg.display(), text(&out));
        let out = Command::new(bin)
            .current_dir(root())
            .arg("--config")
            .arg(cfg)
            .args([
                "--state-dir",
                "/nonexistent/hotplug-hook",
                "--sysfs-root",
                "tests/fixtures/nitro-ena-unload/sys",
                // Never ask a real IMDS from a test (the verdict needs none).
                "--imds-endpoint",
                "http://127.0.0.1:9",
                "classify",
                "--json",
                "--action",
                "remove",
                "--devpath",
                "/devices/pci0000:00/0000:00:05.0/net/ens5",
                "--driver",
                "ena",
            ])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", cfg.display(), text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verdict"], "driver-unload", "{}", cfg.display());
    }
    // A typo fails loudly (exit 2) rather than falling back to a default.
    let typo = dir.path().join("typo.json");
    fs::write(&typo, example.replace("settle_ms", "settle_msec")).unwrap();
    let out = Command::new(bin)
        .arg("--config")
        .arg(&typo)
        .args(["--state-dir", "/nonexistent/hotplug-hook", "status"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// The scan unit stays off the network without a network namespace of its
/// own: from systemd 254, `PrivateNetwork=yes` also mounts a fresh /sys,
/// where it would see only `lo`.
#[test]
fn no_unit_uses_a_private_network_namespace() {
    for e in fs::read_dir(root().join("systemd")).unwrap().flatten() {
        let unit = fs::read_to_string(e.path()).unwrap();
        let settings: Vec<&str> = unit
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with("PrivateNetwork=") || l.starts_with("NetworkNamespacePath="))
            .collect();
        assert!(settings.is_empty(), "{:?}: {settings:?}", e.path());
    }
    let scan = fs::read_to_string(root().join("systemd/hotplug-hook-scan.service")).unwrap();
    assert!(scan.lines().any(|l| l == "IPAddressDeny=any"));
    let families = scan
        .lines()
        .find_map(|l| l.strip_prefix("RestrictAddressFamilies="))
        .unwrap();
    assert!(!families.contains("AF_INET"), "{families}");
}

// --- arm64 -----------------------------------------------------------------

/// The README's demo, run by `bin` (through `runner`, if any); its output
/// without the timing line.
fn readme_demo(runner: &[&str], bin: &Path) -> String {
    let mut argv: Vec<String> = runner.iter().map(|s| s.to_string()).collect();
    argv.push(bin.display().to_string());
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(root())
        .env_clear()
        .args([
            "--config",
            "/dev/null",
            "--state-dir",
            "/nonexistent/hotplug-hook",
            "--sysfs-root",
            "tests/fixtures/nitro-ena-unload/sys",
            "classify",
            "--action",
            "remove",
            "--devpath",
            "/devices/pci0000:00/0000:00:05.0/net/ens5",
            "--driver",
            "ena",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{argv:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("decided in "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn arm64_package_runs_the_readme_demo_under_qemu_user() {
    let target_installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == ARM64)
        });
    if !target_installed {
        // The Rust standard library for arm64 comes from rustup, not from a
        // Debian package: a machine that cannot fetch it cannot build this.
        eprintln!(
            "SKIPPED arm64 package: the Rust target is not installed (rustup target add {ARM64})"
        );
        return;
    }
    let qemu = ["qemu-aarch64-static", "qemu-aarch64"]
        .into_iter()
        .find(|q| has(q));
    if !has("aarch64-linux-gnu-gcc") || qemu.is_none() {
        skip(
            "arm64 package",
            "gcc-aarch64-linux-gnu, libc6-dev-arm64-cross or qemu-user-static is missing",
        );
        return;
    }
    if amd64_deb().is_none() {
        return; // no cargo-deb: said so already
    }
    let deb = make_deb("deb-arm64", "arm64");
    let x = unpack(&deb);
    let control = fs::read_to_string(x.path().join("DEBIAN/control")).unwrap();
    assert!(control.contains("Architecture: arm64\n"), "{control}");
    let bin = x.path().join("usr/libexec/hotplug-hook");
    let elf = fs::read(&bin).unwrap();
    // ELF, 64-bit, e_machine EM_AARCH64 (183).
    assert!(elf.starts_with(b"\x7fELF\x02"), "not a 64-bit ELF");
    assert_eq!(
        u16::from_le_bytes([elf[18], elf[19]]),
        183,
        "not an aarch64 binary"
    );
    // The arm64 package holds the same files as the amd64 one.
    let names = |d: &Path| -> BTreeSet<String> { listing(d).into_keys().collect() };
    assert_eq!(names(&deb), names(amd64_deb().unwrap()));
    let arm = readme_demo(&[qemu.unwrap(), "-L", "/usr/aarch64-linux-gnu"], &bin);
    let native = readme_demo(&[], Path::new(env!("CARGO_BIN_EXE_hotplug-hook")));
    assert!(
        arm.starts_with("ens5 remove: driver-unload (no reconfiguration)"),
        "{arm}"
    );
    assert_eq!(arm, native, "the arm64 build decides otherwise");
}

// --- under systemd as PID 1 --------------------------------------------------

/// A Debian kernel unpacked (with `modules.dep`): the one the real-kernel
/// suite caches, or downloaded into the same cache the same way.
fn kernel() -> Result<(PathBuf, String), String> {
    let cache = root().join("target/realkernel/kernel");
    // The package linux-image-amd64 depends on now (as the real-kernel
    // suite picks it), if apt knows it.
    let wanted = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))
        .ok()
        .and_then(|deps| {
            deps.lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
                .map(str::to_string)
        });
    let find = || -> Option<(PathBuf, String)> {
        let mut dirs: Vec<PathBuf> = fs::read_dir(&cache)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .collect();
        dirs.sort_by_key(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()) != wanted);
        for dir in dirs {
            let Ok(boot) = fs::read_dir(dir.join("boot")) else {
                continue;
            };
            for b in boot.flatten() {
                let name = b.file_name().to_string_lossy().into_owned();
                let Some(k) = name.strip_prefix("vmlinuz-") else {
                    continue;
                };
                let modules = dir.join("lib/modules").join(k);
                if modules.join("modules.dep").exists() && modules.join("kernel/fs/9p").is_dir() {
                    return Some((dir.clone(), k.to_string()));
                }
            }
        }
        None
    };
    if let Some(k) = find() {
        return Ok(k);
    }
    fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    let pkg = wanted
        .clone()
        .ok_or("apt-cache knows no linux-image-amd64 (apt-get update)")?;
    let tmp = tempfile::tempdir_in(&cache).map_err(|e| e.to_string())?;
    run(Command::new("apt-get")
        .args(["download", "-q", &pkg])
        .current_dir(tmp.path()));
    let deb = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let unpacked = tmp.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    let k = fs::read_dir(unpacked.join("lib/modules"))
        .unwrap()
        .flatten()
        .next()
        .ok_or("no modules")?
        .file_name()
        .to_string_lossy()
        .into_owned();
    run(Command::new("depmod").arg("-b").arg(&unpacked).arg(&k));
    let _ = fs::rename(&unpacked, cache.join(&pkg));
    find().ok_or_else(|| "the kernel did not unpack".into())
}

/// MACs of the guest's two NICs; the second is removed under the worker unit.
const GUEST_MACS: [&str; 2] = ["52:54:00:7a:00:01", "52:54:00:7a:00:02"];

fn initramfs(work: &Path, kroot: &Path, kver: &str, deb: &Path) -> PathBuf {
    let tree = work.join("initramfs");
    let _ = fs::remove_dir_all(&tree);
    for d in [
        "bin",
        "m",
        "proc",
        "sys",
        "dev",
        "payload/pk",
        "payload/etc/systemd/system",
    ] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    fs::copy(busybox, tree.join("bin/busybox")).unwrap();
    for a in "sh mount insmod mkdir cp rm chroot switch_root cat echo poweroff tr".split(' ') {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(a)).unwrap();
    }
    // 9p and overlay for the root, virtio for the NICs and the 9p transport.
    let mut order = Vec::new();
    for m in ["9p", "9pnet_virtio", "overlay", "virtio_net", "virtio_pci"] {
        let deps = run(Command::new("modprobe").arg("-d").arg(kroot).args([
            "-S",
            kver,
            "--show-depends",
            m,
        ]));
        for l in deps.lines() {
            let Some(ko) = l.strip_prefix("insmod ") else {
                continue;
            };
            let ko = Path::new(ko.split_whitespace().next().unwrap());
            let name = ko.file_name().unwrap().to_string_lossy().into_owned();
            if !order.contains(&name) {
                fs::copy(ko, tree.join("m").join(&name)).unwrap();
                order.push(name);
            }
        }
    }
    fs::write(tree.join("m/order"), order.join("\n") + "\n").unwrap();
    let write = |rel: &str, text: &str, mode: u32| {
        let p = tree.join(rel);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    let guest = root().join("tests/packaging");
    write(
        "init",
        &fs::read_to_string(guest.join("init")).unwrap(),
        0o755,
    );
    // The package as dpkg would lay it, its control files for the postinst.
    let payload = tree.join("payload");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&payload));
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(payload.join("pk/control")));
    write(
        "payload/pk/check.sh",
        &fs::read_to_string(guest.join("check.sh")).unwrap(),
        0o644,
    );
    write(
        "payload/pk/remove-mac",
        &format!("{}\n", GUEST_MACS[1]),
        0o644,
    );
    // A config with a command backend (no IMDS: the guest has no network),
    // so a removal runs the worker unit.
    fs::create_dir_all(payload.join("etc/hotplug-hook")).unwrap();
    let config = serde_json::json!({
        "imds": false,
        "backend": "command",
        "command": ["/bin/sh", "-c",
            "echo \"$HOTPLUG_ACTION $HOTPLUG_INTERFACE $HOTPLUG_VERDICT $HOTPLUG_MAC\" >> /run/pk-worker.log"],
    });
    write(
        "payload/etc/hotplug-hook/config.json",
        &config.to_string(),
        0o644,
    );
    write(
        "payload/etc/systemd/system/pk.target",
        "[Unit]\nDescription=hotplug-hook package check\n\
         Requires=sysinit.target pk-check.service\nAfter=sysinit.target pk-check.service\n",
        0o644,
    );
    write(
        "payload/etc/systemd/system/pk-check.service",
        "[Unit]\nDescription=hotplug-hook package check: report, remove a NIC, power off\n\
         After=sysinit.target hotplug-hook-scan.service systemd-udevd.service\n\
         [Service]\nType=oneshot\nExecStart=/bin/sh /pk/check.sh\n\
         StandardOutput=tty\nStandardError=tty\nTTYPath=/dev/ttyS0\n",
        0o644,
    );
    // Host units that only slow a TCG boot down (tmpfiles would walk the
    // host's /tmp and /var over 9p).
    for u in [
        "systemd-tmpfiles-setup.service",
        "systemd-timesyncd.service",
        "systemd-pstore.service",
    ] {
        std::os::unix::fs::symlink("/dev/null", payload.join("etc/systemd/system").join(u))
            .unwrap();
    }
    let cpio = work.join("initrd.cpio");
    run(Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . | cpio -o -H newc -R 0:0 --quiet > \"$2\"")
        .arg("sh")
        .arg(&tree)
        .arg(&cpio));
    cpio
}

#[test]
fn packaged_units_run_under_systemd_as_pid1() {
    if std::env::var("HOTPLUG_REALKERNEL").is_ok_and(|v| v == "off") {
        eprintln!("SKIPPED systemd boot: HOTPLUG_REALKERNEL=off");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        skip("systemd boot", "not root");
        return;
    }
    for tool in [
        "qemu-system-x86_64",
        "busybox",
        "cpio",
        "modprobe",
        "depmod",
    ] {
        if !has(tool) {
            skip("systemd boot", &format!("{tool} is missing"));
            return;
        }
    }
    if !Path::new("/lib/systemd/systemd").exists() || !has("deb-systemd-helper") {
        skip(
            "systemd boot",
            "the host has no systemd or init-system-helpers",
        );
        return;
    }
    let Some(deb) = amd64_deb() else { return };
    let (kroot, kver) = kernel().unwrap_or_else(|e| panic!("kernel: {e}"));
    let work = root().join("target/packaging");
    fs::create_dir_all(&work).unwrap();
    // One QEMU at a time with the real-kernel suite (its lock).
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root().join("target/realkernel/lock"))
        .unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let initrd = initramfs(&work, &kroot, &kver, deb);
    let console = work.join("console.log");
    let _ = fs::remove_file(&console);
    let mut args: Vec<String> =
        "-machine q35 -accel tcg -smp 2 -m 1024 -nodefaults -no-user-config -display none -no-reboot"
            .split_whitespace()
            .map(str::to_string)
            .collect();
    args.extend([
        "-kernel".into(),
        kroot
            .join("boot")
            .join(format!("vmlinuz-{kver}"))
            .display()
            .to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        "console=ttyS0,115200 loglevel=4 panic=-1 rdinit=/init systemd.show_status=0".into(),
        "-serial".into(),
        format!("file:{}", console.display()),
        // The host's root, read-only; the guest writes to a tmpfs overlay.
        "-virtfs".into(),
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap".into(),
    ]);
    for (i, mac) in GUEST_MACS.iter().enumerate() {
        args.extend([
            "-netdev".into(),
            format!("hubport,id=n{i},hubid={i}"),
            "-device".into(),
            format!("virtio-net-pci,netdev=n{i},mac={mac}"),
        ]);
    }
    let start = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Generous: about 50 s on 2 cores under TCG; never a timed assert, only
    // a bound on a hung guest.
    let limit = Duration::from_secs(600);
    let status = loop {
        if let Some(s) = qemu.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    eprintln!(
        "systemd boot: {:.1} s (console: {})",
        start.elapsed().as_secs_f64(),
        console.display()
    );
    let lines: Vec<&str> = log
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("PK|"))
        .collect();
    for l in &lines {
        eprintln!("  {l}");
    }
    let ctx = format!("\nconsole {}:\n{}", console.display(), lines.join("\n"));
    assert!(
        status.is_some(),
        "the guest did not power off in {limit:?}{ctx}"
    );
    assert!(lines.contains(&"DONE"), "the check did not finish{ctx}");
    let field = |prefix: &str| -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect()
    };
    // The real postinst enabled both units where the [Install] sections say.
    let wants = field("WANTS|");
    assert!(
        wants.contains(&"sysinit|hotplug-hook-scan.service"),
        "{wants:?}{ctx}"
    );
    assert!(
        wants.contains(&"multi-user|hotplug-hook-reconcile.service"),
        "{wants:?}{ctx}"
    );
    let sd = field("SYSTEMD|");
    assert!(
        sd.len() == 1 && sd[0].ends_with("|systemd"),
        "systemd is not PID 1{ctx}"
    );
    // scan ran at boot under systemd, saw both NICs and recorded them.
    let units = field("UNIT|");
    assert!(
        units.contains(&"hotplug-hook-scan.service|enabled|active|success|0"),
        "{units:?}{ctx}"
    );
    assert!(
        units
            .iter()
            .any(|u| u.starts_with("hotplug-hook-reconcile.service|enabled|")),
        "{units:?}{ctx}"
    );
    let records: Vec<Value> = field("RECORD|")
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    for mac in GUEST_MACS {
        assert!(
            records.iter().any(|r| r["mac"] == mac),
            "scan recorded no NIC with MAC {mac}{ctx}"
        );
    }
    assert!(
        field("SCANLOG|")
            .iter()
            .any(|l| l.starts_with("recorded 2 interfaces")),
        "{ctx}"
    );
    assert!(
        field("PATH|")
            .iter()
            .any(|p| p.starts_with("/usr/sbin/hotplug-hook|hotplug-hook ")),
        "{ctx}"
    );
    assert_eq!(field("RECONCILE|"), ["success|0"], "{ctx}");
    // A real removal: the packaged rule ran `handle`, which started the
    // worker unit through systemctl; the worker ran the command.
    let worker = field("WORKER|");
    assert!(
        worker.len() == 1
            && worker[0].contains("remove ")
            && worker[0].contains(&format!("device-removed {}", GUEST_MACS[1])),
        "the worker unit did not run the command: {worker:?}{ctx}"
    );
    let journal: Vec<Value> = field("JOURNAL|")
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert!(
        journal
            .iter()
            .any(|e| e["verdict"] == "device-removed" && e["mac"] == GUEST_MACS[1]),
        "{journal:?}{ctx}"
    );
}
