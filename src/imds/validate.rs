//! Checks on what IMDS and the user give the client: bodies, tokens,
//! device-numbers and interface-ids, MACs, endpoints and metadata paths.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use anyhow::Result;

use super::{DEFAULT_ENDPOINT, IPV6_ENDPOINT, MACS_PATH, TOKEN_PATH};
use crate::error::{invalid, quote};

/// The kind of path, for counters.
pub fn path_kind(path: &str) -> &'static str {
    if path == TOKEN_PATH {
        "token"
    } else if path == MACS_PATH
        || path == super::clouds::AZURE_NETWORK_PATH
        || path == super::clouds::GCE_NICS_PATH
    {
        "macs"
    } else if path.starts_with(MACS_PATH) {
        "mac-key"
    } else {
        "other"
    }
}

pub(super) fn jitter(d: Duration) -> Duration {
    // Seeded per process from the OS: enough to spread retries apart.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let frac = 0.5 + (r % 1000) as f64 / 2000.0;
    d.mul_f64(frac)
}

/// Refuses bodies that are not text: invalid UTF-8 or control characters
/// other than newline, tab and carriage return.
pub fn validate_text(body: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(body).map_err(|_| "response is not UTF-8 text".to_string())?;
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("response contains control characters".into());
    }
    Ok(s.to_string())
}

/// A session token goes into a header: printable ASCII, no spaces, bounded.
pub fn validate_token(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() || t.len() > 512 || !t.chars().all(|c| c.is_ascii_graphic()) {
        return Err("IMDS returned a malformed token".into());
    }
    Ok(t.to_string())
}

/// `device-number` and `network-card-index`: a small decimal integer
/// (at most 4 digits), as it may go into the command's environment.
pub fn valid_device_number(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse::<u16>().ok().map(|n| n.to_string()))
        .flatten()
}

/// `interface-id`: `eni-` and 1 to 32 lower-case hex digits.
pub fn valid_interface_id(s: &str) -> Option<String> {
    let hex = s.strip_prefix("eni-")?;
    (!hex.is_empty()
        && hex.len() <= 32
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then(|| s.to_string())
}

pub fn is_mac(s: &str) -> bool {
    s.len() == 17
        && s.split(':').count() == 6
        && s.split(':')
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Lower-cased MAC, or `None` if it is not one.
pub fn normalize_mac(s: &str) -> Option<String> {
    let m = s.trim().to_ascii_lowercase();
    is_mac(&m).then_some(m)
}

/// Parses the `macs/` listing: one `02:..:../` per line.
pub fn parse_mac_listing(body: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mac = line.strip_suffix('/').unwrap_or(line);
        match normalize_mac(mac) {
            Some(m) => out.push(m),
            None => {
                return Err(format!(
                    "unexpected line in the MAC listing: {}",
                    quote(line)
                ));
            }
        }
    }
    Ok(out)
}

/// `http://...` without path, query or credentials; `ipv4`/`ipv6` name the
/// two IMDS addresses.
pub fn normalize_endpoint(s: &str) -> Result<String> {
    let e = match s {
        "ipv4" => DEFAULT_ENDPOINT,
        "ipv6" => IPV6_ENDPOINT,
        other => other.trim_end_matches('/'),
    };
    let Some(host) = e.strip_prefix("http://") else {
        return Err(invalid(format!(
            "IMDS endpoint {} must start with http://",
            quote(s)
        )));
    };
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '-'));
    if !ok {
        return Err(invalid(format!(
            "IMDS endpoint {} must be http://HOST[:PORT] with no path",
            quote(s)
        )));
    }
    Ok(e.to_string())
}

/// A path for `imds get`: relative to `/latest/`, e.g. `meta-data/instance-id`.
pub fn metadata_path(p: &str) -> Result<String> {
    let p = p.trim_start_matches('/');
    let p = p.strip_prefix("latest/").unwrap_or(p);
    let ok = !p.is_empty()
        && p.len() <= 512
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
        && !p.contains("//")
        // No dot segments, and nothing that only looks unlike one (`...`):
        // no metadata path has two dots in a row.
        && !p.contains("..")
        && !p.split('/').any(|c| c == ".");
    if !ok {
        return Err(invalid(format!("invalid metadata path {}", quote(p))));
    }
    Ok(format!("/latest/{p}"))
}
