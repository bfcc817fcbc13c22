//! Which NICs hotplug-hook owns: `manage` and `ignore` selectors from root's
//! configuration. A selector names any of `ifname` (a glob), `driver`, `mac`
//! and `device_number` (EC2's IMDS device-number: `"0"`, `"1-3"`, `"1-"`);
//! all the fields it names must match. `ignore` wins; with no `manage`, every
//! physical NIC is managed. The device-number is only known where IMDS is
//! asked (the worker), so the hook judges what sysfs can tell and leaves a
//! selector that needs it to the worker. Pure: no I/O here.

use std::fmt;

use anyhow::Result;
use serde_json::Value;

use crate::error::{invalid, quote};

/// One selector; `None` fields are not looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub ifname: Option<String>,
    pub driver: Option<String>,
    pub mac: Option<String>,
    /// Inclusive range; `None` upper bound: open.
    pub device_number: Option<(u32, Option<u32>)>,
}

/// What is known of a NIC when it is judged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Nic<'a> {
    pub ifname: &'a str,
    pub driver: Option<&'a str>,
    pub mac: Option<&'a str>,
    /// Known only in the worker (from IMDS, or recorded at add).
    pub device_number: Option<u32>,
}

/// Whether a selector matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hit {
    Yes,
    No,
    /// Everything else matches; the device-number decides.
    NeedsDeviceNumber,
}

/// The verdict on scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InScope {
    Managed,
    /// Not ours, and why (the selector that decided).
    Unmanaged(String),
    /// Decided by the device-number, which only the worker can learn.
    NeedsDeviceNumber,
}

/// The `manage` and `ignore` lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub manage: Vec<Selector>,
    pub ignore: Vec<Selector>,
}

impl Selector {
    /// Parses `{"ifname": "eth*", "driver": "ena", "mac": "..",
    /// "device_number": "1-"}`; unknown keys and empty selectors are refused.
    pub fn from_json(key: &str, v: &Value) -> Result<Selector> {
        let bad = |why: String| invalid(format!("{key}: {why}"));
        let Value::Object(map) = v else {
            return Err(bad("each selector is an object".into()));
        };
        let mut s = Selector::default();
        for (k, val) in map {
            let text = val
                .as_str()
                .ok_or_else(|| bad(format!("{} must be a string", quote(k))))?;
            if text.is_empty() || text.len() > 64 || text.chars().any(char::is_control) {
                return Err(bad(format!("invalid {k} {}", quote(text))));
            }
            match k.as_str() {
                "ifname" => s.ifname = Some(text.to_string()),
                "driver" => s.driver = Some(text.to_string()),
                "mac" if crate::state::valid_mac(text) => s.mac = Some(text.to_ascii_lowercase()),
                "mac" => return Err(bad(format!("invalid mac {}", quote(text)))),
                "device_number" => {
                    s.device_number = Some(parse_range(text).ok_or_else(|| {
                        bad(format!(
                            "invalid device_number {} (\"0\", \"1-3\" or \"1-\")",
                            quote(text)
                        ))
                    })?)
                }
                other => return Err(bad(format!("unknown selector key {}", quote(other)))),
            }
        }
        if s == Selector::default() {
            return Err(bad("an empty selector would match every NIC".into()));
        }
        Ok(s)
    }

    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.clone()));
            }
        };
        put("ifname", &self.ifname);
        put("driver", &self.driver);
        put("mac", &self.mac);
        put("device_number", &self.device_number.map(range_text));
        Value::Object(m)
    }

    fn hit(&self, nic: &Nic) -> Hit {
        let field = |want: &Option<String>, have: Option<&str>, eq: fn(&str, &str) -> bool| {
            want.as_deref()
                .is_none_or(|w| have.is_some_and(|h| eq(w, h)))
        };
        let rest = field(&self.ifname, Some(nic.ifname), glob)
            && field(&self.driver, nic.driver, |a, b| a == b)
            && field(&self.mac, nic.mac, |a, b| a.eq_ignore_ascii_case(b));
        match (rest, self.device_number, nic.device_number) {
            (false, _, _) => Hit::No,
            (true, None, _) => Hit::Yes,
            (true, Some((lo, hi)), Some(n)) if n >= lo && hi.is_none_or(|hi| n <= hi) => Hit::Yes,
            (true, Some(_), Some(_)) => Hit::No,
            (true, Some(_), None) => Hit::NeedsDeviceNumber,
        }
    }

    /// Whether judging it needs IMDS.
    pub fn uses_device_number(&self) -> bool {
        self.device_number.is_some()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json().to_string())
    }
}

impl Scope {
    pub fn is_empty(&self) -> bool {
        self.manage.is_empty() && self.ignore.is_empty()
    }

    /// Whether any selector needs the device-number.
    pub fn uses_device_number(&self) -> bool {
        self.manage
            .iter()
            .chain(&self.ignore)
            .any(Selector::uses_device_number)
    }

    pub fn judge(&self, nic: &Nic) -> InScope {
        let mut pending = false;
        for s in &self.ignore {
            match s.hit(nic) {
                Hit::Yes => return InScope::Unmanaged(format!("matches ignore selector {s}")),
                Hit::NeedsDeviceNumber => pending = true,
                Hit::No => {}
            }
        }
        if self.manage.is_empty() {
            return if pending {
                InScope::NeedsDeviceNumber
            } else {
                InScope::Managed
            };
        }
        let mut maybe = false;
        for s in &self.manage {
            match s.hit(nic) {
                Hit::Yes if !pending => return InScope::Managed,
                Hit::Yes | Hit::NeedsDeviceNumber => maybe = true,
                Hit::No => {}
            }
        }
        if maybe {
            InScope::NeedsDeviceNumber
        } else {
            InScope::Unmanaged(format!(
                "matches no manage selector ({})",
                self.manage
                    .iter()
                    .map(Selector::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}

/// `"0"`, `"1-3"`, `"1-"`.
fn parse_range(s: &str) -> Option<(u32, Option<u32>)> {
    let num = |t: &str| -> Option<u32> {
        (!t.is_empty() && t.len() <= 4 && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    match s.split_once('-') {
        None => num(s).map(|n| (n, Some(n))),
        Some((lo, "")) => Some((num(lo)?, None)),
        Some((lo, hi)) => {
            let (lo, hi) = (num(lo)?, num(hi)?);
            (lo <= hi).then_some((lo, Some(hi)))
        }
    }
}

fn range_text((lo, hi): (u32, Option<u32>)) -> String {
    match hi {
        Some(h) if h == lo => lo.to_string(),
        Some(h) => format!("{lo}-{h}"),
        None => format!("{lo}-"),
    }
}

/// Shell-style glob: `*`, `?` and `[...]` (with `!` or `^` to negate).
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == ']').map(|i| i + 1) else {
                    return n.first() == Some(&'[') && go(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let set = &p[1..end];
                let (neg, set) = match set.first() {
                    Some('!' | '^') => (true, &set[1..]),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != neg && go(&p[end + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests;
