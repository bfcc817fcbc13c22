//! Parsing and validating the udev environment.

use super::*;
use std::collections::HashMap;

fn run(vars: &[(&str, &str)], ov: Overrides) -> Result<Parsed> {
    let map: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    parse(&|k| map.get(k).cloned(), &ov, &mut |_| Ok(Action::Add))
}

fn event(vars: &[(&str, &str)]) -> Event {
    match run(vars, Overrides::default()).unwrap() {
        Parsed::Event(e) => e,
        Parsed::Ignored(why) => panic!("ignored: {why}"),
    }
}

#[test]
fn iface_names_follow_the_kernel_rules() {
    for ok in ["eth0", "ens5", "a", "enp0s31f6-long1", "veth@x", "br-1.2"] {
        assert!(validate_iface(ok).is_ok(), "{ok} should be valid");
    }
    for bad in [
        "",
        ".",
        "..",
        "eth/0",
        "eth 0",
        "eth\n0",
        "eth:0",
        "eth\t",
        "sixteen-bytes-xx",
    ] {
        assert!(validate_iface(bad).is_err(), "{bad:?} should be invalid");
    }
}

#[test]
fn devpaths_are_checked_lexically() {
    let ok = "/devices/pci0000:00/0000:00:05.0/net/ens5";
    assert!(validate_devpath(ok).is_ok());
    assert!(validate_devpath("/devices/virtual/net/veth0").is_ok());
    for bad in [
        "devices/pci0000:00/net/ens5",
        "/sys/devices/pci0000:00/net/ens5",
        "/devices/pci0000:00/../../etc/net/ens5",
        "/devices/pci0000:00/./net/ens5",
        "/devices//net/ens5",
        "/devices/pci0000:00/0000:00:05.0",
        "/devices/pci0000:00/net/ens5/",
    ] {
        assert!(validate_devpath(bad).is_err(), "{bad:?} should be invalid");
    }
}

#[test]
fn parent_and_iface_of_devpath() {
    let d = "/devices/pci0000:00/0000:00:05.0/net/ens5";
    assert_eq!(parent_of(d), "/devices/pci0000:00/0000:00:05.0");
    assert_eq!(iface_of(d), "ens5");
    assert_eq!(parent_of("/devices/vif-0/net/eth0"), "/devices/vif-0");
    assert!(is_virtual("/devices/virtual/net/veth0"));
    assert!(!is_virtual(d));
}

#[test]
fn udev_environment_is_read() {
    let e = event(&[
        ("ACTION", "remove"),
        ("SUBSYSTEM", "net"),
        ("DEVPATH", "/devices/pci0000:00/0000:00:05.0/net/ens5"),
        ("INTERFACE", "ens5"),
        ("IFINDEX", "2"),
        ("ID_NET_DRIVER", "ena"),
        ("SEQNUM", "4242"),
    ]);
    assert_eq!(e.action, Action::Remove);
    assert_eq!(e.iface, "ens5");
    assert_eq!(e.ifindex, Some(2));
    assert_eq!(e.driver.as_deref(), Some("ena"));
    assert_eq!(e.seqnum, Some(4242));
    assert_eq!(e.parent(), Some("/devices/pci0000:00/0000:00:05.0"));
    assert!(e.from_udev);
}

#[test]
fn flags_override_udev_variables() {
    let ov = Overrides {
        iface: Some("eth1".into()),
        action: Some("add".into()),
        ..Overrides::default()
    };
    let Parsed::Event(e) = run(&[("ACTION", "remove"), ("INTERFACE", "eth0")], ov).unwrap() else {
        panic!()
    };
    assert_eq!(e.action, Action::Add);
    assert_eq!(e.iface, "eth1");
}

#[test]
fn other_subsystems_and_actions_are_ignored() {
    let r = run(
        &[("ACTION", "add"), ("SUBSYSTEM", "block")],
        Overrides::default(),
    );
    assert!(matches!(r.unwrap(), Parsed::Ignored(_)));
    let r = run(
        &[
            ("ACTION", "change"),
            ("SUBSYSTEM", "net"),
            ("INTERFACE", "eth0"),
        ],
        Overrides::default(),
    );
    assert!(matches!(r.unwrap(), Parsed::Ignored(_)));
}

#[test]
fn bad_input_is_rejected() {
    let cases: &[&[(&str, &str)]] = &[
        &[("ACTION", "explode"), ("INTERFACE", "eth0")],
        &[("ACTION", "add")],
        &[("ACTION", "add"), ("INTERFACE", "../x")],
        &[("ACTION", "add"), ("INTERFACE", "eth0"), ("IFINDEX", "-1")],
        &[("ACTION", "add"), ("INTERFACE", "eth0"), ("SEQNUM", "x")],
        &[("ACTION", "move"), ("INTERFACE", "eth0")],
        &[
            ("ACTION", "add"),
            ("INTERFACE", "eth0"),
            ("DEVPATH", "/devices/pci0000:00/net/eth1"),
        ],
        &[
            ("ACTION", "add"),
            ("INTERFACE", "eth0"),
            ("ID_NET_DRIVER", "a b"),
        ],
    ];
    for vars in cases {
        let err = run(vars, Overrides::default()).unwrap_err();
        assert_eq!(
            crate::error::exit_code(&err),
            crate::error::ExitCode::Usage,
            "{vars:?}: {err:#}"
        );
    }
}

#[test]
fn non_utf8_interface_is_rejected() {
    use std::os::unix::ffi::OsStringExt;
    let env = |k: &str| match k {
        "ACTION" => Some(OsString::from("add")),
        "INTERFACE" => Some(OsString::from_vec(vec![b'e', 0xff])),
        _ => None,
    };
    let err = parse(&env, &Overrides::default(), &mut |_| Ok(Action::Add)).unwrap_err();
    assert!(format!("{err:#}").contains("INTERFACE is not valid UTF-8"));
}

#[test]
fn interface_comes_from_devpath_when_missing() {
    let e = event(&[("ACTION", "remove"), ("DEVPATH", "/devices/vif-0/net/eth0")]);
    assert_eq!(e.iface, "eth0");
}

#[test]
fn a_kernel_move_names_the_old_interface_in_devpath_old() {
    // What the kernel sends for `ip link set ens3 name lan0` (no INTERFACE_OLD).
    let e = event(&[
        ("ACTION", "move"),
        ("SUBSYSTEM", "net"),
        ("INTERFACE", "lan0"),
        (
            "DEVPATH",
            "/devices/pci0000:00/0000:00:03.0/virtio0/net/lan0",
        ),
        (
            "DEVPATH_OLD",
            "/devices/pci0000:00/0000:00:03.0/virtio0/net/ens3",
        ),
    ]);
    assert_eq!(e.action, Action::Move);
    assert_eq!(e.iface_old.as_deref(), Some("ens3"));
    // A NIC back from a netns: a move with its own name.
    let e = event(&[
        ("ACTION", "move"),
        ("INTERFACE", "ens3"),
        (
            "DEVPATH_OLD",
            "/devices/pci0000:00/0000:00:03.0/virtio0/net/ens3",
        ),
    ]);
    assert_eq!(e.iface_old.as_deref(), Some("ens3"));
    let err = run(
        &[
            ("ACTION", "move"),
            ("INTERFACE", "ens3"),
            ("DEVPATH_OLD", "/devices/../net/x"),
        ],
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(crate::error::exit_code(&err), crate::error::ExitCode::Usage);
}

#[test]
fn the_device_of_a_virtio_nic_is_its_transport() {
    let cases = [
        (
            "/devices/pci0000:00/0000:00:03.0/virtio0/net/ens3",
            "/devices/pci0000:00/0000:00:03.0",
        ),
        (
            "/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/virtio12/net/enp1s0",
            "/devices/pci0000:00/0000:00:1c.0/0000:01:00.0",
        ),
        (
            "/devices/pci0000:00/0000:00:05.0/net/ens5",
            "/devices/pci0000:00/0000:00:05.0",
        ),
        ("/devices/vif-0/net/eth0", "/devices/vif-0"),
        ("/devices/virtual/net/veth0", "/devices/virtual/net/veth0"),
        // Not a virtio bus device name.
        (
            "/devices/platform/virtiofoo/net/eth0",
            "/devices/platform/virtiofoo",
        ),
    ];
    for (devpath, want) in cases {
        assert_eq!(device_of(devpath), want, "{devpath}");
    }
}
