//! Azure accelerated networking: each synthetic NIC (`hv_netvsc`, on VMBus)
//! is paired with an SR-IOV VF (`mlx4_en`, `mlx5_core`, `mana`) that
//! carries the same MAC and sits on a Hyper-V PCI bus below a VMBus device
//! of its own (`…/VMBUS:00/<guid>/pci<dom>:00/<dom>:00:02.0/net/enP<dom>s1`).
//! The host removes and re-adds the VF at will; the synthetic NIC stays. So
//! a VF's event is recognised from its path alone, and its synthetic NIC by
//! MAC among the present `hv_netvsc` NICs: a few reads of `/class/net`, only
//! for events under VMBus.

use anyhow::Result;

use super::{Evidence, Synthetic};
use crate::host::sysfs::{Sysfs, pci_slot_address};

/// The net driver of Hyper-V's synthetic NIC.
pub const SYNTHETIC_DRIVER: &str = "hv_netvsc";

/// A net device whose parent is a PCI function below a VMBus device: an
/// SR-IOV VF on a Hyper-V PCI bus (Gen1 `VMBus:00`, Gen2 `VMBUS:00`).
pub fn is_hyperv_vf(devpath: &str) -> bool {
    let parent = crate::event::parent_of(devpath);
    let name = crate::event::iface_of(parent);
    pci_slot_address(name).is_some() && parent.to_ascii_lowercase().contains("/vmbus:")
}

/// The present synthetic NIC with this MAC (any, when the MAC is unknown),
/// never one on `device` itself.
pub fn synthetic_partner(
    sysfs: &Sysfs,
    mac: Option<&str>,
    device: &str,
) -> Result<Option<Synthetic>> {
    let mut any = None;
    for name in sysfs.list_interfaces()? {
        let rel = format!("/class/net/{name}");
        let Some(address) = sysfs.read_attr(&format!("{rel}/address"))? else {
            continue;
        };
        let matches = mac.is_some_and(|m| m.eq_ignore_ascii_case(&address));
        if mac.is_some() && !matches {
            continue;
        }
        if sysfs.link_name(&format!("{rel}/device/driver")).as_deref() != Some(SYNTHETIC_DRIVER) {
            continue;
        }
        // The VF's own device is never its synthetic NIC.
        if sysfs
            .class_net_devpath(&name)?
            .is_some_and(|d| crate::event::device_of(&d) == device)
        {
            continue;
        }
        let found = Synthetic {
            name,
            mac: address,
            by_mac: matches,
        };
        if matches {
            return Ok(Some(found));
        }
        any.get_or_insert(found);
    }
    Ok(any)
}

/// For an add or remove of a VF that is not itself synthetic: its
/// synthetic NIC, into the evidence. The VF's MAC is sysfs's at add, the
/// record's at remove.
pub fn gather(sysfs: &Sysfs, ev: &mut Evidence) -> Result<()> {
    let (Some(devpath), Some(device)) = (ev.devpath.clone(), ev.device.clone()) else {
        return Ok(());
    };
    if ev.driver.as_deref() == Some(SYNTHETIC_DRIVER) || !is_hyperv_vf(&devpath) {
        return Ok(());
    }
    let mac = ev.mac().map(str::to_string);
    let Some(syn) = synthetic_partner(sysfs, mac.as_deref(), &device)? else {
        ev.fact("vf.synthetic", "(none present)", sysfs.show("/class/net"));
        return Ok(());
    };
    ev.fact(
        "vf.synthetic",
        format!(
            "{} (MAC {}{})",
            syn.name,
            syn.mac,
            if syn.by_mac { "" } else { "; VF MAC unknown" }
        ),
        sysfs.show(&format!("/class/net/{}/device/driver", syn.name)),
    );
    ev.synthetic = Some(syn);
    Ok(())
}
