//! What IMDS says about one MAC: attached (with its device-number), or
//! detached (absent from the listing, or its keys answer 404).

use anyhow::Result;

use super::*;

impl Client {
    /// `macs/<mac>/<key>`.
    pub fn mac_key(&mut self, mac: &str, key: &str) -> Result<Fetched> {
        let mac =
            normalize_mac(mac).ok_or_else(|| invalid(format!("invalid MAC {}", quote(mac))))?;
        self.get(&format!("{MACS_PATH}{mac}/{key}"))
    }

    /// Is this MAC detached? Absent from the listing, or listed while its
    /// `device-number` answers 404 (IMDS lags after a detach).
    pub fn detached(&mut self, mac: &str) -> Presence {
        let Some(mac) = normalize_mac(mac) else {
            return Presence::Unknown(format!("invalid MAC {}", quote(mac)));
        };
        match self.macs() {
            Err(e) => Presence::Unknown(format!("{e:#}")),
            Ok(list) if !list.contains(&mac) => {
                Presence::Detached(format!("{mac} is not in the macs/ listing"))
            }
            Ok(_) => self.attachment(&mac, "listed, but"),
        }
    }

    /// Is this MAC attached? Its per-MAC keys, without the listing (which
    /// adds nothing once `device-number` answers).
    pub fn attached(&mut self, mac: &str) -> Presence {
        let Some(mac) = normalize_mac(mac) else {
            return Presence::Unknown(format!("invalid MAC {}", quote(mac)));
        };
        self.attachment(&mac, "")
    }

    fn attachment(&mut self, mac: &str, prefix: &str) -> Presence {
        let device_number = match self.mac_key(mac, "device-number") {
            Err(e) => return Presence::Unknown(format!("{e:#}")),
            Ok(Fetched::Absent) => {
                return Presence::Detached(format!(
                    "{prefix}{}macs/{mac}/device-number answers 404",
                    if prefix.is_empty() { "" } else { " " }
                ));
            }
            Ok(Fetched::Found(n)) => match valid_device_number(n.trim()) {
                Some(n) => n,
                // Not what IMDS sends: nothing to confirm with, and never
                // passed on to the command.
                None => {
                    return Presence::Unknown(format!(
                        "macs/{mac}/device-number is not a small integer: {}",
                        quote(n.trim())
                    ));
                }
            },
        };
        let mut optional =
            |key: &str, valid: fn(&str) -> Option<String>| match self.mac_key(mac, key) {
                Ok(Fetched::Found(v)) => {
                    let v = valid(v.trim());
                    if v.is_none() {
                        crate::log::warn(&format!("ignoring macs/{mac}/{key}: not a valid {key}"));
                    }
                    v
                }
                _ => None,
            };
        let network_card_index = optional("network-card-index", valid_device_number);
        let interface_id = optional("interface-id", valid_interface_id);
        Presence::Attached(Attachment {
            device_number,
            network_card_index,
            interface_id,
        })
    }
}
