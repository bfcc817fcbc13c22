use super::*;

#[test]
fn azure_listing() {
    let body = r#"{"interface":[{"ipv4":{"ipAddress":[{"privateIpAddress":"10.0.0.4"}]},"macAddress":"000D3AF8A1B2"},{"macAddress":"000d3af8a1b3"}]}"#;
    assert_eq!(
        parse_azure_network(body).unwrap(),
        ["00:0d:3a:f8:a1:b2", "00:0d:3a:f8:a1:b3"]
    );
    for bad in [
        "",
        "[]",
        r#"{"interface":[{"macAddress":"00:0D"}]}"#,
        "\u{0}garbage",
    ] {
        assert!(parse_azure_network(bad).is_err(), "{bad:?}");
    }
    assert_eq!(azure_mac("000D3AF8A1B2; rm"), None);
}

#[test]
fn gce_listing() {
    let body = r#"[{"mac":"42:01:0a:80:00:02","network":"projects/1/networks/default"},{"mac":"42:01:0A:80:00:03"}]"#;
    assert_eq!(
        parse_gce_interfaces(body).unwrap(),
        ["42:01:0a:80:00:02", "42:01:0a:80:00:03"]
    );
    for bad in ["", "{}", r#"[{"mac":"x"}]"#, r#"[{}]"#] {
        assert!(parse_gce_interfaces(bad).is_err(), "{bad:?}");
    }
}
