//! One metadata interface ([`Metadata`]), one implementation per cloud:
//! EC2's IMDSv2 [`Client`], and [`Azure`] and [`Gce`], each a [`Client`]
//! in that cloud's flavour, so each is as frugal as the EC2 one (its
//! listing cached in the state dir and fetched single-flight, one deadline,
//! bounded retries, every request counted and logged). All three serve at
//! 169.254.169.254; the token PUT is EC2's alone.
//!
//! - Azure: `GET /metadata/instance/network?api-version=2021-02-01` with
//!   `Metadata: true`; MACs upper-case without separators.
//! - Google: `GET /computeMetadata/v1/instance/network-interfaces/?recursive=true`
//!   with `Metadata-Flavor: Google`; a JSON list of objects with `mac`.
//!
//! Neither adds NICs to a running VM, so a MAC's presence is its being in
//! the one listing; its position there is its device number.

use anyhow::Result;
use serde_json::Value;

use super::{Attachment, Client, ImdsSettings, Presence, RequestLog, normalize_mac};
use crate::error::quote;
use crate::host::cloud::Cloud;
use crate::metrics::ImdsCounters;
use crate::state::State;

pub const AZURE_NETWORK_PATH: &str = "/metadata/instance/network?api-version=2021-02-01";
pub const GCE_NICS_PATH: &str = "/computeMetadata/v1/instance/network-interfaces/?recursive=true";

/// What the worker and `classify` ask a cloud's metadata service.
pub trait Metadata {
    fn cloud(&self) -> Cloud;
    /// Is this MAC attached (for a `new-device`)?
    fn attached(&mut self, mac: &str) -> Presence;
    /// Is this MAC detached (for a `device-removed` or a tie-break)?
    fn detached(&mut self, mac: &str) -> Presence;
    /// Every attached MAC (lower-case, colon-separated).
    fn macs(&mut self) -> Result<Vec<String>>;
    /// The requests made (and answers served from the cache).
    fn log(&self) -> &[RequestLog];
    fn counters(&self) -> &ImdsCounters;
}

impl Metadata for Client {
    fn cloud(&self) -> Cloud {
        self.cloud
    }
    fn attached(&mut self, mac: &str) -> Presence {
        Client::attached(self, mac)
    }
    fn detached(&mut self, mac: &str) -> Presence {
        Client::detached(self, mac)
    }
    fn macs(&mut self) -> Result<Vec<String>> {
        Client::macs(self)
    }
    fn log(&self) -> &[RequestLog] {
        &self.log
    }
    fn counters(&self) -> &ImdsCounters {
        &self.counters
    }
}

macro_rules! listing_client {
    ($name:ident, $cloud:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $name(pub Client);

        impl $name {
            pub fn new(settings: ImdsSettings, state: Option<State>) -> $name {
                $name(Client::flavoured($cloud, settings, state))
            }
        }

        impl Metadata for $name {
            fn cloud(&self) -> Cloud {
                $cloud
            }
            fn attached(&mut self, mac: &str) -> Presence {
                by_listing(&mut self.0, mac)
            }
            fn detached(&mut self, mac: &str) -> Presence {
                by_listing(&mut self.0, mac)
            }
            fn macs(&mut self) -> Result<Vec<String>> {
                self.0.macs()
            }
            fn log(&self) -> &[RequestLog] {
                &self.0.log
            }
            fn counters(&self) -> &ImdsCounters {
                &self.0.counters
            }
        }
    };
}

listing_client!(Azure, Cloud::Azure, "Azure's Instance Metadata Service.");
listing_client!(Gce, Cloud::Gce, "Google Compute Engine's metadata server.");

/// The client for a cloud; `None` for no cloud (nothing to ask).
pub fn client_for(
    cloud: Cloud,
    settings: ImdsSettings,
    state: Option<State>,
) -> Option<Box<dyn Metadata>> {
    match cloud {
        Cloud::Ec2 => Some(Box::new(Client::new(settings, state))),
        Cloud::Azure => Some(Box::new(Azure::new(settings, state))),
        Cloud::Gce => Some(Box::new(Gce::new(settings, state))),
        Cloud::None => None,
    }
}

/// Presence from the one listing: in it (at position N: device N) or not.
fn by_listing(c: &mut Client, mac: &str) -> Presence {
    let Some(mac) = normalize_mac(mac) else {
        return Presence::Unknown(format!("invalid MAC {}", quote(mac)));
    };
    match c.macs() {
        Err(e) => Presence::Unknown(format!("{e:#}")),
        Ok(list) => match list.iter().position(|m| *m == mac) {
            Some(i) => Presence::Attached(Attachment {
                device_number: i.to_string(),
                network_card_index: None,
                interface_id: None,
            }),
            None => Presence::Detached(format!(
                "{mac} is not among the {} interfaces the {} metadata service lists",
                list.len(),
                c.cloud.as_str()
            )),
        },
    }
}

/// `000D3AF8A1B2` (Azure's form) → `00:0d:3a:f8:a1:b2`.
pub fn azure_mac(s: &str) -> Option<String> {
    let s = s.trim();
    if s.len() != 12 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let parts: Vec<&str> = (0..6).map(|i| &s[i * 2..i * 2 + 2]).collect();
    normalize_mac(&parts.join(":"))
}

/// Azure's `network` document: `{"interface": [{"macAddress": ...}, ...]}`.
pub fn parse_azure_network(body: &str) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let list = v
        .get("interface")
        .and_then(Value::as_array)
        .ok_or("no \"interface\" list")?;
    list.iter()
        .map(|i| {
            let m = i.get("macAddress").and_then(Value::as_str).unwrap_or("");
            azure_mac(m).ok_or_else(|| format!("not a MAC: {}", quote(m)))
        })
        .collect()
}

/// Google's `network-interfaces/?recursive=true`: `[{"mac": ...}, ...]`.
pub fn parse_gce_interfaces(body: &str) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let list = v.as_array().ok_or("not a JSON list")?;
    list.iter()
        .map(|i| {
            let m = i.get("mac").and_then(Value::as_str).unwrap_or("");
            normalize_mac(m).ok_or_else(|| format!("not a MAC: {}", quote(m)))
        })
        .collect()
}

#[cfg(test)]
mod tests;
