//! Which cloud this host runs in, from DMI (`/class/dmi/id/*`) and Xen's
//! `/hypervisor/uuid` under the sysfs root: the parsing is pure
//! ([`classify_dmi`]), the reads go through [`Sysfs`]. Asked at most a few
//! small attributes, in an order that stops at the first decisive one.

use clap::ValueEnum;

use crate::host::sysfs::Sysfs;

/// Azure's DMI chassis asset tag, the same on every Azure VM.
pub const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";

pub const SYS_VENDOR: &str = "/class/dmi/id/sys_vendor";
pub const PRODUCT_NAME: &str = "/class/dmi/id/product_name";
pub const PRODUCT_VERSION: &str = "/class/dmi/id/product_version";
pub const CHASSIS_ASSET_TAG: &str = "/class/dmi/id/chassis_asset_tag";
pub const HYPERVISOR_UUID: &str = "/hypervisor/uuid";

/// A cloud, as detected or as set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cloud {
    Ec2,
    Azure,
    Gce,
    /// No known cloud (or `--cloud none`): no metadata service is asked.
    #[default]
    None,
}

impl Cloud {
    pub const ALL: [Cloud; 4] = [Cloud::Ec2, Cloud::Azure, Cloud::Gce, Cloud::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Ec2 => "ec2",
            Cloud::Azure => "azure",
            Cloud::Gce => "gce",
            Cloud::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Cloud> {
        Cloud::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The `cloud` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum CloudSetting {
    /// Detect from DMI.
    #[default]
    Auto,
    /// Amazon EC2 (Nitro and Xen).
    Ec2,
    /// Microsoft Azure.
    Azure,
    /// Google Compute Engine.
    Gce,
    /// None: no metadata service.
    None,
}

/// The cloud and where it was read: the deciding attribute's path, or the
/// setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    pub cloud: Cloud,
    pub source: String,
}

/// The cloud from DMI attributes, given a reader of sysfs-relative paths
/// (trimmed values, `None` when absent). Returns the cloud and the path of
/// the attribute that decided it (for a cloud not recognised, the vendor's).
pub fn classify_dmi(read: impl Fn(&str) -> Option<String>) -> (Cloud, &'static str) {
    let vendor = read(SYS_VENDOR).unwrap_or_default();
    match vendor.as_str() {
        "Amazon EC2" => return (Cloud::Ec2, SYS_VENDOR),
        "Google" if read(PRODUCT_NAME).as_deref() == Some("Google Compute Engine") => {
            return (Cloud::Gce, PRODUCT_NAME);
        }
        "Xen" => {
            // Xen instance types: `ec2`-prefixed hypervisor uuid (EC2
            // writes it lower- or upper-case), or an `amazon` version.
            if read(HYPERVISOR_UUID).is_some_and(|u| u.to_ascii_lowercase().starts_with("ec2")) {
                return (Cloud::Ec2, HYPERVISOR_UUID);
            }
            if read(PRODUCT_VERSION).is_some_and(|v| v.to_ascii_lowercase().contains("amazon")) {
                return (Cloud::Ec2, PRODUCT_VERSION);
            }
        }
        _ => {}
    }
    if read(CHASSIS_ASSET_TAG).as_deref() == Some(AZURE_ASSET_TAG) {
        return (Cloud::Azure, CHASSIS_ASSET_TAG);
    }
    (Cloud::None, SYS_VENDOR)
}

/// The cloud for a setting: as set, or (auto) detected under `sysfs`.
pub fn resolve(setting: CloudSetting, sysfs: &Sysfs) -> Detected {
    let set = |cloud: Cloud| Detected {
        cloud,
        source: "--cloud".into(),
    };
    match setting {
        CloudSetting::Ec2 => set(Cloud::Ec2),
        CloudSetting::Azure => set(Cloud::Azure),
        CloudSetting::Gce => set(Cloud::Gce),
        CloudSetting::None => set(Cloud::None),
        CloudSetting::Auto => {
            let (cloud, path) = classify_dmi(|p| sysfs.read_attr(p).ok().flatten());
            Detected {
                cloud,
                source: sysfs.show(path),
            }
        }
    }
}

/// Whose metadata service to ask: the cloud as set or detected; with
/// `auto` on a host whose DMI names no cloud, EC2's (what this hook asked
/// before it knew other clouds). `None` only for `--cloud none`.
pub fn metadata_cloud(setting: CloudSetting, sysfs: &Sysfs) -> Cloud {
    match resolve(setting, sysfs).cloud {
        Cloud::None if setting == CloudSetting::Auto => Cloud::Ec2,
        c => c,
    }
}

#[cfg(test)]
mod tests;
