//! The udev environment and flags: arbitrary `KEY=VALUE\n` bytes (values
//! may be any bytes, as the kernel's are) must give an event, "ignored" or
//! a usage error, never a panic; a parsed event is always valid.
#![no_main]

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use hotplug_hook::event::{self, Action, Overrides, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut env: HashMap<String, OsString> = HashMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let key = String::from_utf8_lossy(&line[..eq]).into_owned();
            env.insert(key, OsString::from_vec(line[eq + 1..].to_vec()));
        }
    }
    let parsed = event::parse(&|k| env.get(k).cloned(), &Overrides::default(), &mut |_| Ok(Action::Add));
    if let Ok(Parsed::Event(e)) = parsed {
        assert!(event::validate_iface(&e.iface).is_ok());
        if let Some(d) = &e.devpath {
            assert!(event::validate_devpath(d).is_ok());
            assert_eq!(event::iface_of(d), e.iface);
            assert!(event::parent_of(d).starts_with("/devices"));
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = event::validate_devpath(s);
        let _ = event::validate_iface(s);
    }
});
