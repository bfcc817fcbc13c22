//! What comes back from IMDS (and from our own state files, which a crash
//! or a hostile writer may leave in any shape): never a panic, and what is
//! accepted is well-formed.
#![no_main]

use hotplug_hook::{imds, jobs, metrics, state};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = imds::validate_text(data) else {
        return;
    };
    assert!(!text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')));
    if let Ok(macs) = imds::parse_mac_listing(&text) {
        assert!(macs.iter().all(|m| imds::is_mac(m)));
    }
    if let Ok(token) = imds::validate_token(&text) {
        assert!(token.chars().all(|c| c.is_ascii_graphic()));
    }
    let _ = imds::normalize_endpoint(&text);
    if let Ok(p) = imds::metadata_path(&text) {
        assert!(p.starts_with("/latest/") && !p.contains(".."));
    }
    let _ = state::Record::from_json(&text);
    let _ = metrics::Metrics::from_json(&text);
    let _ = jobs::Job::parse(&text);
});
