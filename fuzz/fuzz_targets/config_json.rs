//! The config file: any text gives settings or a usage error, never a
//! panic; valid settings survive a round trip through `to_json`.
#![no_main]

use hotplug_hook::config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Settings::from_json(text).and_then(Settings::resolve) {
        let again = Settings::from_json(&cfg.to_json().to_string())
            .and_then(Settings::resolve)
            .expect("a resolved config re-parses");
        assert_eq!(format!("{cfg:?}"), format!("{again:?}"));
    }
});
