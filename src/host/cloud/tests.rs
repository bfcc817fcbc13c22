use std::collections::HashMap;

use super::*;

fn dmi(pairs: &[(&str, &str)]) -> (Cloud, &'static str) {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    classify_dmi(|p| m.get(p).cloned())
}

#[test]
fn clouds_from_dmi() {
    type Row<'a> = (&'a [(&'a str, &'a str)], Cloud, &'a str);
    let table: &[Row] = &[
        (&[(SYS_VENDOR, "Amazon EC2")], Cloud::Ec2, SYS_VENDOR),
        (
            &[
                (SYS_VENDOR, "Xen"),
                (HYPERVISOR_UUID, "ec2e1916-9099-7caf-fd21-012345abcdef"),
            ],
            Cloud::Ec2,
            HYPERVISOR_UUID,
        ),
        (
            &[
                (SYS_VENDOR, "Xen"),
                (HYPERVISOR_UUID, "EC2E1916-9099-7CAF-FD21-012345ABCDEF"),
            ],
            Cloud::Ec2,
            HYPERVISOR_UUID,
        ),
        (
            &[(SYS_VENDOR, "Xen"), (PRODUCT_VERSION, "4.11.amazon")],
            Cloud::Ec2,
            PRODUCT_VERSION,
        ),
        // Xen elsewhere is not EC2.
        (
            &[
                (SYS_VENDOR, "Xen"),
                (HYPERVISOR_UUID, "a1b2c3d4-0000-0000-0000-000000000000"),
                (PRODUCT_VERSION, "4.2"),
            ],
            Cloud::None,
            SYS_VENDOR,
        ),
        (
            &[
                (SYS_VENDOR, "Microsoft Corporation"),
                (PRODUCT_NAME, "Virtual Machine"),
                (CHASSIS_ASSET_TAG, AZURE_ASSET_TAG),
            ],
            Cloud::Azure,
            CHASSIS_ASSET_TAG,
        ),
        // Hyper-V on premises: same vendor, no asset tag.
        (
            &[
                (SYS_VENDOR, "Microsoft Corporation"),
                (CHASSIS_ASSET_TAG, "1234-5678"),
            ],
            Cloud::None,
            SYS_VENDOR,
        ),
        (
            &[
                (SYS_VENDOR, "Google"),
                (PRODUCT_NAME, "Google Compute Engine"),
            ],
            Cloud::Gce,
            PRODUCT_NAME,
        ),
        (
            &[(SYS_VENDOR, "Google"), (PRODUCT_NAME, "Pixel")],
            Cloud::None,
            SYS_VENDOR,
        ),
        (&[(SYS_VENDOR, "QEMU")], Cloud::None, SYS_VENDOR),
        (&[], Cloud::None, SYS_VENDOR),
    ];
    for (attrs, cloud, path) in table {
        assert_eq!(dmi(attrs), (*cloud, *path), "{attrs:?}");
    }
}

#[test]
fn names_round_trip() {
    for c in Cloud::ALL {
        assert_eq!(Cloud::parse(c.as_str()), Some(c));
    }
}
