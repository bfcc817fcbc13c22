//! Validation, statuses and paths.

use super::cache::token_fresh;
use super::*;

#[test]
fn mac_listing() {
    let table: &[(&str, Result<Vec<&str>, ()>)] = &[
        (
            "02:AA:bb:cc:dd:01/\n02:aa:bb:cc:dd:02/",
            Ok(vec!["02:aa:bb:cc:dd:01", "02:aa:bb:cc:dd:02"]),
        ),
        ("02:aa:bb:cc:dd:01/\n", Ok(vec!["02:aa:bb:cc:dd:01"])),
        ("02:aa:bb:cc:dd:01", Ok(vec!["02:aa:bb:cc:dd:01"])),
        ("", Ok(vec![])),
        ("<html>", Err(())),
        ("02:aa:bb:cc:dd/", Err(())),
        ("02:aa:bb:cc:dd:0g/", Err(())),
    ];
    for (body, want) in table {
        let got = parse_mac_listing(body).map_err(|_| ());
        let want = want
            .clone()
            .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(got, want, "{body:?}");
    }
}

#[test]
fn tokens_and_text() {
    assert_eq!(validate_token("AQAEAFTxyz==\n").unwrap(), "AQAEAFTxyz==");
    for bad in ["", "a b", "tok\r\nX-Evil: 1", &"x".repeat(513), "tök"] {
        assert!(validate_token(bad).is_err(), "{bad:?}");
    }
    assert!(validate_text(b"eni-0123\n").is_ok());
    assert!(validate_text(b"\x00\x01garbage").is_err());
    assert!(validate_text(&[0xff, 0xfe]).is_err());
}

#[test]
fn endpoints_and_paths() {
    assert_eq!(
        normalize_endpoint("ipv6").unwrap(),
        "http://[fd00:ec2::254]"
    );
    assert_eq!(
        normalize_endpoint("http://127.0.0.1:8080/").unwrap(),
        "http://127.0.0.1:8080"
    );
    for bad in [
        "https://169.254.169.254",
        "http://a@b",
        "http://h/latest",
        "ftp://x",
        "http://",
    ] {
        assert!(normalize_endpoint(bad).is_err(), "{bad}");
    }
    assert_eq!(
        metadata_path("meta-data/instance-id").unwrap(),
        "/latest/meta-data/instance-id"
    );
    assert_eq!(
        metadata_path("/latest/meta-data/").unwrap(),
        "/latest/meta-data/"
    );
    // "..." came from the fuzzer (fuzz/artifacts/imds_response).
    for bad in [
        "",
        "meta-data/../../x",
        "meta-data/a?b",
        "http://evil/",
        "...",
        "a/.../b",
        "./x",
    ] {
        assert!(metadata_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn token_freshness_uses_the_boot_clock() {
    // 6 h TTL: renewed a minute before it runs out.
    assert!(token_fresh(1_000, 21_600, 1_000));
    assert!(token_fresh(1_000, 21_600, 1_000 + 21_539_999));
    assert!(!token_fresh(1_000, 21_600, 1_000 + 21_540_000));
    // 4 s TTL: a quarter of it.
    assert!(token_fresh(0, 4, 2_999));
    assert!(!token_fresh(0, 4, 3_000));
    // Fetched "in the future" (another boot, a forged file): expired.
    assert!(!token_fresh(5_001, 21_600, 5_000));
    assert!(!token_fresh(u64::MAX, u64::MAX, 0));
}

#[test]
fn statuses_and_kinds() {
    for s in [429, 500, 502, 503, 504] {
        assert!(is_retryable_status(s));
    }
    for s in [200, 400, 401, 403, 404, 405] {
        assert!(!is_retryable_status(s));
    }
    assert_eq!(path_kind(TOKEN_PATH), "token");
    assert_eq!(path_kind(MACS_PATH), "macs");
    assert_eq!(
        path_kind(&format!("{MACS_PATH}02:aa:bb:cc:dd:01/device-number")),
        "mac-key"
    );
    assert_eq!(path_kind("/latest/meta-data/instance-id"), "other");
}
