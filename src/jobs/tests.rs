//! Job files: format, deadlines, claims, hostile files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::file::{linked, open_job};
use super::*;

fn job_json(_dir: &Path, stamp: Option<u64>) -> String {
    let mut v = json!({
        "format": JOB_FORMAT,
        "id": "1-2", "created_ms": 5, "iface": "ens7", "action": "add",
        "verdict": "new-device", "backend": "command", "confirm": "none",
    });
    if let Some(s) = stamp {
        v["created_boot_ms"] = json!(s);
    }
    v.to_string()
}

fn write_job(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("1-2.json");
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn deadlines_count_on_the_boot_clock() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::parse(&job_json(dir.path(), Some(1_000))).unwrap();
    let cfg = crate::config::Settings {
        imds_confirm_timeout_secs: Some(10),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(Job::deadline_ms(&cfg), 10_000 + STRANDED_MARGIN_MS);
    assert_eq!(job.age_ms(1_500), Some(500));
    assert!(!job.past_deadline(&cfg, 1_000 + 40_000));
    assert!(job.past_deadline(&cfg, 1_000 + 40_001));
    // Created "in the future": no age, past any deadline.
    assert_eq!(job.age_ms(999), None);
    assert!(job.past_deadline(&cfg, 999));
    // No boot stamp: past its deadline.
    let old = Job::parse(&job_json(dir.path(), None)).unwrap();
    assert_eq!(old.created_boot_ms, None);
    assert!(old.past_deadline(&cfg, 1_000));
    // The stamp survives a round trip.
    let back = Job::parse(&job.to_json().to_string()).unwrap();
    assert_eq!(back.created_boot_ms, Some(1_000));
    assert_eq!(back.created_ms, 5);
}

#[test]
fn claims_are_exclusive_and_see_unlinked_jobs_as_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_job(dir.path(), &job_json(dir.path(), Some(1)));
    let Claim::Ours(first) = claim(&path).unwrap() else {
        panic!("a free job is ours");
    };
    assert_eq!(first.read().unwrap().iface, "ens7");
    assert_eq!(first.name(), "1-2");
    // A second open file description cannot take it while we hold it.
    assert!(matches!(claim(&path).unwrap(), Claim::Held));
    drop(first);
    assert!(matches!(claim(&path).unwrap(), Claim::Ours(_)));
    // Opened, then unlinked by a finishing worker, then locked: gone.
    let file = open_job(&path).unwrap().unwrap();
    fs::remove_file(&path).unwrap();
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    assert!(!linked(&lock));
    assert!(matches!(claim(&path).unwrap(), Claim::Gone));
}

#[test]
fn finish_removes_only_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_job(dir.path(), &job_json(dir.path(), Some(1)));
    let Claim::Ours(f) = claim(&path).unwrap() else {
        panic!()
    };
    // Replaced under the same name meanwhile: not ours to remove.
    fs::remove_file(&path).unwrap();
    write_job(dir.path(), "{}");
    f.finish().unwrap();
    assert!(path.exists());
    let Claim::Ours(f) = claim(&path).unwrap() else {
        panic!()
    };
    f.finish().unwrap();
    assert!(!path.exists());
}

#[test]
fn jobs_carry_no_settings_and_a_format() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::parse(&job_json(dir.path(), Some(1))).unwrap();
    let v = job.to_json();
    assert_eq!(v["format"], JOB_FORMAT);
    assert_eq!(v["backend"], "command");
    for key in ["config", "command", "command_timeout_secs", "state_dir"] {
        assert!(v.get(key).is_none(), "{key} in {v}");
    }
    // Another format (or none: format 1 carried the config) is refused.
    for format in [json!(1), json!(3), json!("2"), Value::Null] {
        let mut old = v.clone();
        old["format"] = format.clone();
        let err = Job::parse(&old.to_string()).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown format"),
            "{format}: {err:#}"
        );
    }
    // Keys it does not know are never read.
    let mut planted = v.clone();
    planted["command"] = json!(["/bin/sh", "-c", "touch /tmp/pwned"]);
    planted["config"] = json!({"command": ["/bin/sh"]});
    let back = Job::parse(&planted.to_string()).unwrap();
    assert_eq!(back.to_json(), v);
    // Values that would reach the command's environment are checked.
    for (k, bad) in [
        ("mac", json!("x".repeat(100))),
        ("driver", json!("..")),
        ("iface", json!("../x")),
        ("devpath", json!("/etc/passwd")),
        ("backend", json!("shell")),
    ] {
        let mut j = v.clone();
        j[k] = bad;
        assert!(Job::parse(&j.to_string()).is_err(), "{k}");
    }
}

#[test]
fn hostile_job_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_job(dir.path(), &job_json(dir.path(), Some(1)));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o602)).unwrap();
    assert!(claim(&path).is_err());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(claim(&link).is_err());
    let fifo = dir.path().join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert!(claim(&fifo).is_err(), "a FIFO is refused without blocking");
    let big = write_job(dir.path(), &" ".repeat(MAX_JOB_BYTES as usize + 1));
    let Claim::Ours(f) = claim(&big).unwrap() else {
        panic!()
    };
    assert!(f.read().is_err());
}
