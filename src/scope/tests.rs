//! Selectors, ranges, globs and the manage/ignore rules.

use serde_json::json;

use super::*;

fn sel(v: Value) -> Selector {
    Selector::from_json("manage", &v).unwrap()
}

fn nic(ifname: &str, dn: Option<u32>) -> Nic<'_> {
    Nic {
        ifname,
        driver: Some("ena"),
        mac: Some("02:00:00:00:00:05"),
        device_number: dn,
    }
}

#[test]
fn globs() {
    for (p, n, want) in [
        ("eth*", "eth0", true),
        ("eth*", "ens5", false),
        ("ens?", "ens5", true),
        ("ens?", "ens10", false),
        ("en[sp]*", "enp1s0", true),
        ("en[!s]*", "ens5", false),
        ("eth[0-3]", "eth2", true),
        ("eth[0-3]", "eth7", false),
        ("*", "anything", true),
        ("[", "[", true),
    ] {
        assert_eq!(glob(p, n), want, "{p} {n}");
    }
}

#[test]
fn selectors_parse_and_refuse() {
    assert_eq!(
        sel(json!({"device_number": "1-"})).device_number,
        Some((1, None))
    );
    assert_eq!(
        sel(json!({"device_number": "1-3"})).device_number,
        Some((1, Some(3)))
    );
    assert_eq!(
        sel(json!({"device_number": "0"})).device_number,
        Some((0, Some(0)))
    );
    for bad in [
        json!({}),
        json!({"name": "eth0"}),
        json!({"ifname": 3}),
        json!({"device_number": "3-1"}),
        json!({"device_number": "-1"}),
        json!({"device_number": "one"}),
        json!({"mac": "zz"}),
        json!("eth0"),
    ] {
        let err = Selector::from_json("ignore", &bad).unwrap_err();
        assert_eq!(
            crate::error::exit_code(&err),
            crate::error::ExitCode::Usage,
            "{bad}"
        );
    }
}

#[test]
fn ignore_wins_and_no_manage_means_everything() {
    let all = Scope::default();
    assert_eq!(all.judge(&nic("ens5", None)), InScope::Managed);
    let scope = Scope {
        manage: vec![sel(json!({"driver": "ena"}))],
        ignore: vec![sel(json!({"ifname": "ens5"}))],
    };
    assert!(
        matches!(scope.judge(&nic("ens5", None)), InScope::Unmanaged(w) if w.contains("ignore"))
    );
    assert_eq!(scope.judge(&nic("ens6", None)), InScope::Managed);
    let other = Nic {
        driver: Some("virtio_net"),
        ..nic("eth0", None)
    };
    assert!(matches!(scope.judge(&other), InScope::Unmanaged(w) if w.contains("no manage")));
}

#[test]
fn device_numbers_are_left_to_the_worker() {
    // "A node where a CNI attaches ENIs": device-number 1 and up is the CNI's.
    let cni = Scope {
        manage: vec![],
        ignore: vec![sel(json!({"device_number": "1-"}))],
    };
    assert_eq!(cni.judge(&nic("ens6", None)), InScope::NeedsDeviceNumber);
    assert_eq!(cni.judge(&nic("ens5", Some(0))), InScope::Managed);
    assert!(matches!(
        cni.judge(&nic("ens6", Some(2))),
        InScope::Unmanaged(_)
    ));
    // "Primary ENI only".
    let primary = Scope {
        manage: vec![sel(json!({"device_number": "0"}))],
        ignore: vec![],
    };
    assert_eq!(
        primary.judge(&nic("ens5", None)),
        InScope::NeedsDeviceNumber
    );
    assert_eq!(primary.judge(&nic("ens5", Some(0))), InScope::Managed);
    assert!(matches!(
        primary.judge(&nic("ens6", Some(1))),
        InScope::Unmanaged(_)
    ));
    // A field sysfs knows already rules it out, IMDS or not.
    let scoped = Scope {
        manage: vec![],
        ignore: vec![sel(json!({"driver": "mlx5_core", "device_number": "1-"}))],
    };
    assert_eq!(scoped.judge(&nic("ens6", None)), InScope::Managed);
}

#[test]
fn selectors_round_trip() {
    for v in [
        json!({"ifname": "eth*", "device_number": "1-3"}),
        json!({"mac": "02:00:00:00:00:05"}),
        json!({"driver": "ena", "device_number": "0"}),
    ] {
        assert_eq!(sel(v.clone()).to_json(), v);
    }
}
