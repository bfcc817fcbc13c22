//! The `ec2-net-utils` backend: amazon-ec2-net-utils' per-interface units,
//! driven the way its udev rule (`99-vpc-policy-routes.rules`) drives them,
//! but only for an attach or a detach that the hook and IMDS confirmed.
//!
//! Debian's 2.3.0 rule, for `ENV{ID_NET_DRIVER}=="vif|ena|ixgbevf"`:
//!
//! ```text
//! ACTION=="remove" RUN+="/usr/bin/systemctl stop --no-block policy-routes@$name.service"
//! ACTION=="remove" RUN+="/usr/bin/systemctl disable --now refresh-policy-routes@$name.timer refresh-policy-routes@$name.service policy-routes@$name.service"
//! ACTION=="add"    RUN+="/usr/bin/systemctl enable --now --no-block policy-routes@$name.service refresh-policy-routes@$name.timer"
//! ```
//!
//! In 2.3.0 stopping `policy-routes@<iface>` runs `setup-policy-routes
//! <iface> stop`, which deletes `/run/systemd/network/70-<iface>.network`
//! and `70-<iface>.network.d/` and reloads networkd — on every `remove`,
//! driver reloads included. From 2.5.0 `stop` does nothing (the deletion
//! moved to a `remove` action nothing calls), so a detached ENI's config
//! stays and matches its MAC when it comes back. Here:
//!
//! - `new-device`: the rule's `add` command, verbatim;
//! - `device-removed`: the rule's `disable --now` command (which stops the
//!   units of the other `remove` line too), then the two paths the
//!   package's scripts write for that interface are removed (whatever the
//!   installed version's `stop` did), and networkd is reloaded if any was
//!   left, as the package's removal does;
//! - anything else (driver reload, unbind, netns move) never reaches here,
//!   and a verdict that does is refused.
//!
//! No shell: argv is built here from root's configuration
//! (`ec2_net_utils_systemctl`, `ec2_net_utils_network_dir`) and the
//! validated interface name, within `command_timeout_secs` for all of it.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use super::{Ran, Taken, TakenResult, deadline_in, run_until, taken};
use crate::config::{Backend, Config};
use crate::decision::Verdict;
use crate::error::quote;
use crate::jobs::Job;

/// The drivers the package's rule matches (`ENV{ID_NET_DRIVER}`).
pub const DRIVERS: [&str; 3] = ["vif", "ena", "ixgbevf"];

/// The rule's `add` command, after the program.
pub fn add_args(instance: &str) -> Vec<String> {
    vec![
        "enable".into(),
        "--now".into(),
        "--no-block".into(),
        format!("policy-routes@{instance}.service"),
        format!("refresh-policy-routes@{instance}.timer"),
    ]
}

/// The rule's `remove` command that disables and stops every unit of the
/// interface (a superset of its `stop --no-block` line and of 2.5.0's
/// single remove line), after the program.
pub fn remove_args(instance: &str) -> Vec<String> {
    vec![
        "disable".into(),
        "--now".into(),
        format!("refresh-policy-routes@{instance}.timer"),
        format!("refresh-policy-routes@{instance}.service"),
        format!("policy-routes@{instance}.service"),
    ]
}

/// After removing leftover config: what `networkctl reload` does, through
/// the unit's `ExecReload=`, and nothing when networkd is not running.
pub const RELOAD_ARGS: [&str; 2] = ["try-reload-or-restart", "systemd-networkd.service"];

/// What `setup-policy-routes` writes for `iface` under the networkd dir
/// (`unitdir`): the `70-<iface>.network` symlink to `80-ec2.network` and
/// its drop-in dir (`eni.conf`, `ec2net_policy_{4,6}.conf`,
/// `ec2net_alias.conf`), exactly what its `stop` (2.3.0) and `remove`
/// (2.5.0 and later) delete there.
pub fn generated(dir: &Path, iface: &str) -> [PathBuf; 2] {
    [
        dir.join(format!("70-{iface}.network")),
        dir.join(format!("70-{iface}.network.d")),
    ]
}

/// The unit instance for `iface`: the name itself, as udev's `$name`
/// gives it. The package's units pass `%i` (the instance, unescaped) to
/// `setup-policy-routes`, so an escaped instance (`systemd-escape`) would
/// name another interface: only names that are a unit instance as they
/// are (ASCII letters, digits, `_`, `.`, `-`) are accepted, after the
/// kernel's own rules.
pub fn unit_instance(iface: &str) -> Result<&str> {
    crate::event::validate_iface(iface)?;
    if let Some(c) = iface
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        bail!(
            "interface {} has {c:?}: amazon-ec2-net-utils' units take the name verbatim (%i), and it is not a valid unit instance",
            quote(iface)
        );
    }
    Ok(iface)
}

/// Runs the backend for a confirmed job.
pub fn ec2_net_utils(cfg: &Config, job: &Job) -> Taken {
    let done = |result, detail| taken(Backend::Ec2NetUtils, result, detail);
    if let Some(driver) = job.driver.as_deref().filter(|d| !DRIVERS.contains(d)) {
        return done(
            TakenResult::Skipped,
            format!(
                "driver {} is not one amazon-ec2-net-utils handles ({})",
                quote(driver),
                DRIVERS.join(", ")
            ),
        );
    }
    let instance = match unit_instance(&job.iface) {
        Ok(i) => i,
        Err(e) => return done(TakenResult::Failed, format!("{e:#}")),
    };
    let deadline = deadline_in(cfg.command_timeout_secs);
    let systemctl = &cfg.ec2_net_utils_systemctl;
    let run = |args: &[String]| -> (bool, String) {
        let mut cmd = Command::new(systemctl);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        let ran = run_until(cmd, deadline);
        (
            ran.ok(),
            format!(
                "{} {}: {}",
                systemctl.display(),
                args.join(" "),
                describe(&ran)
            ),
        )
    };
    match job.verdict {
        Verdict::NewDevice => {
            let (ok, detail) = run(&add_args(instance));
            done(result(ok), detail)
        }
        Verdict::DeviceRemoved => {
            let (stopped, mut detail) = run(&remove_args(instance));
            let mut ok = stopped;
            let dir = &cfg.ec2_net_utils_network_dir;
            let mut removed = Vec::new();
            for path in generated(dir, instance) {
                match remove(&path) {
                    Ok(true) => removed.push(path.display().to_string()),
                    Ok(false) => {}
                    Err(e) => {
                        ok = false;
                        detail += &format!("; failed to remove {}: {e}", path.display());
                    }
                }
            }
            if removed.is_empty() {
                detail += &format!("; no config left for {instance} in {}", dir.display());
            } else {
                detail += &format!("; removed {}", removed.join(", "));
                let reload: Vec<String> = RELOAD_ARGS.iter().map(|a| a.to_string()).collect();
                let (reloaded, what) = run(&reload);
                ok &= reloaded;
                detail += &format!("; {what}");
            }
            done(result(ok), detail)
        }
        v => done(
            TakenResult::Skipped,
            format!("verdict {} reconfigures nothing", v.as_str()),
        ),
    }
}

fn result(ok: bool) -> TakenResult {
    if ok {
        TakenResult::Done
    } else {
        TakenResult::Failed
    }
}

fn describe(ran: &Ran) -> String {
    match ran {
        Ran::Exited(s) if s.success() => "ok".into(),
        r => r.describe(),
    }
}

/// Removes `path` (a file, a symlink — never followed — or a directory
/// tree). False when there was nothing to remove.
fn remove(path: &Path) -> std::io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let gone = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match gone {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_instances_are_interface_names_as_they_are() {
        for ok in ["ens5", "eth0", "enX0", "ens5.100", "br-1_2"] {
            assert_eq!(unit_instance(ok).unwrap(), ok);
        }
        for bad in [
            "",
            "..",
            "eth/0",
            "veth@x",
            "a\\x2d",
            "eth 0",
            "ünï",
            "sixteen-bytes-xx",
        ] {
            assert!(unit_instance(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn argv_follows_the_package_rule() {
        assert_eq!(
            add_args("ens6").join(" "),
            "enable --now --no-block policy-routes@ens6.service refresh-policy-routes@ens6.timer"
        );
        assert_eq!(
            remove_args("ens6").join(" "),
            "disable --now refresh-policy-routes@ens6.timer refresh-policy-routes@ens6.service policy-routes@ens6.service"
        );
    }

    #[test]
    fn remove_takes_links_not_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("80-ec2.network");
        fs::write(&target, "[Match]\n").unwrap();
        let [file, dropins] = generated(dir.path(), "ens6");
        std::os::unix::fs::symlink(&target, &file).unwrap();
        fs::create_dir_all(&dropins).unwrap();
        fs::write(dropins.join("eni.conf"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path(), dropins.join("loop")).unwrap();
        assert!(remove(&file).unwrap());
        assert!(remove(&dropins).unwrap());
        assert!(!remove(&file).unwrap());
        assert!(target.exists());
        assert!(!file.exists() && !dropins.exists());
    }

    fn job(iface: &str, driver: &str, verdict: &str) -> Job {
        Job::parse(
            &serde_json::json!({
                "format": crate::jobs::JOB_FORMAT, "id": "1-2", "iface": iface,
                "action": "add", "verdict": verdict, "driver": driver,
                "backend": "ec2-net-utils", "confirm": "none",
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn other_drivers_bad_names_and_other_verdicts_run_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::Settings::default().resolve().unwrap();
        // Running it would fail ("failed to start"), not skip.
        cfg.ec2_net_utils_systemctl = dir.path().join("systemctl");
        cfg.ec2_net_utils_network_dir = dir.path().into();
        let t = ec2_net_utils(&cfg, &job("ens5", "virtio_net", "new-device"));
        assert_eq!(t.result, TakenResult::Skipped, "{t:?}");
        let t = ec2_net_utils(&cfg, &job("veth@x", "ena", "new-device"));
        assert_eq!(t.result, TakenResult::Failed, "{t:?}");
        assert!(t.detail.contains("not a valid unit instance"), "{t:?}");
        assert!(!t.detail.contains("failed to start"), "{t:?}");
        let t = ec2_net_utils(&cfg, &job("ens5", "ena", "driver-unload"));
        assert_eq!(t.result, TakenResult::Skipped, "{t:?}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn its_paths_must_be_absolute() {
        for key in ["ec2_net_utils_systemctl", "ec2_net_utils_network_dir"] {
            let text = format!(r#"{{"backend": "ec2-net-utils", "{key}": "rel"}}"#);
            let e = crate::config::Settings::from_json(&text)
                .unwrap()
                .resolve()
                .unwrap_err();
            assert!(
                format!("{e:#}").contains(&format!("{key} must be an absolute path")),
                "{e:#}"
            );
        }
    }
}
