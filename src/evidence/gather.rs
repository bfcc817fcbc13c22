//! The reads behind an [`Evidence`]: one `snapshot` per look of the settle
//! window, from sysfs, module state and the records.

use anyhow::Result;

use super::{Evidence, Fact, ModuleEvidence};
use crate::error::invalid;
use crate::event::{Action, Event, device_of, is_virtual, parent_of};
use crate::host::cloud::{CloudSetting, Detected};
use crate::host::module::module_for_driver;
use crate::host::sysfs::Sysfs;
use crate::state::{Record, State};

/// Reads evidence for one event. Built once per event; `snapshot` is called
/// again on every poll of the settle window.
pub struct Gatherer<'a> {
    pub(super) sysfs: &'a Sysfs,
    pub(super) state: &'a State,
    pub(super) event: &'a Event,
    pub(super) record: Option<Record>,
    pub(super) devpath: Option<String>,
    pub(super) cloud: Option<Detected>,
}

impl<'a> Gatherer<'a> {
    pub fn new(sysfs: &'a Sysfs, state: &'a State, event: &'a Event) -> Result<Self> {
        let devpath = match &event.devpath {
            Some(d) => Some(d.clone()),
            None => sysfs.class_net_devpath(&event.iface)?,
        };
        // A rename's record is still under the old name.
        let name = match event.action {
            Action::Move => event.iface_old.as_deref().unwrap_or(&event.iface),
            _ => &event.iface,
        };
        let record = state.record_for(name, devpath.as_deref());
        let devpath = devpath.or_else(|| record.as_ref().map(|r| r.devpath.clone()));
        if event.action == Action::Remove && devpath.is_none() {
            return Err(invalid(format!(
                "no DEVPATH for {}: it is not in sysfs and has no record; pass --devpath",
                event.iface
            )));
        }
        Ok(Gatherer {
            sysfs,
            state,
            event,
            record,
            devpath,
            cloud: None,
        })
    }

    /// Also tells the cloud (as set, or detected once, here, from DMI).
    pub fn with_cloud(mut self, setting: CloudSetting) -> Self {
        self.cloud = Some(crate::host::cloud::resolve(setting, self.sysfs));
        self
    }

    /// One look at sysfs, module state and records.
    pub fn snapshot(&self) -> Result<Evidence> {
        let sysfs = self.sysfs;
        let e = self.event;
        let mut ev = Evidence {
            action: e.action,
            iface: e.iface.clone(),
            old_name: e.iface_old.clone(),
            devpath: self.devpath.clone(),
            parent: self.devpath.as_deref().map(|d| parent_of(d).to_string()),
            device: self.devpath.as_deref().map(|d| device_of(d).to_string()),
            virtual_dev: self.devpath.as_deref().is_some_and(is_virtual),
            event_ifindex: e.ifindex,
            record: self.record.clone(),
            ..Evidence::default()
        };
        if let Some(d) = &ev.devpath {
            let how = if e.devpath.is_some() {
                "event"
            } else {
                "sysfs or record"
            };
            ev.fact("devpath", d.clone(), how);
        }
        if let Some(c) = &self.cloud {
            ev.cloud = Some(c.cloud);
            ev.fact("cloud", c.cloud.as_str(), c.source.clone());
        }
        if let Some(r) = &self.record {
            ev.fact(
                "record",
                format!(
                    "mac {} ifindex {} driver {}{}",
                    r.mac.as_deref().unwrap_or("?"),
                    r.ifindex.map_or("?".into(), |i| i.to_string()),
                    r.driver.as_deref().unwrap_or("?"),
                    r.departed
                        .as_ref()
                        .map(|d| format!(", departed ({})", d.verdict.as_str()))
                        .unwrap_or_default()
                ),
                self.state.record_path(&r.key()).display().to_string(),
            );
        }
        if e.action == Action::Move {
            return Ok(ev);
        }
        let (Some(devpath), Some(parent), Some(device)) =
            (ev.devpath.clone(), ev.parent.clone(), ev.device.clone())
        else {
            return Ok(ev);
        };
        ev.fact("virtual", yes_no(ev.virtual_dev), "devpath");

        if ev.virtual_dev {
            // A virtual device's "parent" is /devices/virtual, shared by all of
            // them: look at the device itself.
            let now = sysfs.netdev(&devpath)?;
            ev.fact(
                "netdev.present",
                yes_no(now.is_some()),
                sysfs.show(&devpath),
            );
            ev.netdevs.extend(now.clone());
            ev.netdev = now;
            ev.driver = e.driver.clone();
            match e.action {
                Action::Add => self.add_priors(&mut ev),
                Action::Remove if ev.netdevs.is_empty() && e.driver.as_deref() == Some("veth") => {
                    self.veth_peer(&mut ev)?;
                }
                _ => {}
            }
            return Ok(ev);
        }

        ev.parent_present = sysfs.exists(&parent);
        ev.fact(
            "parent.present",
            yes_no(ev.parent_present),
            sysfs.show(&parent),
        );
        ev.device_present = ev.parent_present;
        if device != parent {
            ev.device_present = sysfs.exists(&device);
            ev.fact(
                "device.present",
                yes_no(ev.device_present),
                sysfs.show(&device),
            );
        }
        ev.parent_driver = sysfs.bound_driver(&parent);
        ev.fact(
            "parent.driver",
            ev.parent_driver
                .clone()
                .unwrap_or_else(|| "(unbound)".into()),
            sysfs.show(&format!("{parent}/driver")),
        );
        ev.driver = e
            .driver
            .clone()
            .or_else(|| self.record.as_ref().and_then(|r| r.driver.clone()))
            .or_else(|| ev.parent_driver.clone());
        if let Some(d) = &ev.driver {
            let source = if e.driver.is_some() {
                "ID_NET_DRIVER"
            } else if self.record.as_ref().is_some_and(|r| r.driver.is_some()) {
                "record"
            } else {
                "parent driver link"
            };
            ev.fact("driver", d.clone(), source);
        }

        match e.action {
            Action::Add => {
                ev.netdev = sysfs.netdev(&devpath)?;
                match ev.netdev.clone() {
                    Some(n) => {
                        ev.fact(
                            "netdev.mac",
                            n.mac.clone().unwrap_or_default(),
                            sysfs.show(&format!("{devpath}/address")),
                        );
                        ev.fact(
                            "netdev.ifindex",
                            n.ifindex.map_or(String::new(), |i| i.to_string()),
                            sysfs.show(&format!("{devpath}/ifindex")),
                        );
                    }
                    None => ev.fact("netdev.present", "no", sysfs.show(&devpath)),
                }
                ev.module = self.module(&parent, ev.driver.as_deref(), &mut ev.facts)?;
                if device != parent {
                    ev.transport = self.transport(&device, &mut ev.facts)?;
                }
                self.add_priors(&mut ev);
            }
            Action::Remove => {
                ev.netdevs = sysfs.netdevs_of_device(&device)?;
                let names: Vec<String> = ev
                    .netdevs
                    .iter()
                    .map(|n| format!("{} (ifindex {})", n.name, n.ifindex.unwrap_or(0)))
                    .collect();
                ev.fact(
                    "parent.netdevs",
                    if names.is_empty() {
                        "(none)".into()
                    } else {
                        names.join(", ")
                    },
                    sysfs.show(&format!("{device}/net")),
                );
                ev.replacement = self.replacement(&ev.netdevs, &device);
                if let Some(n) = &ev.replacement {
                    ev.fact(
                        "device.other_nic",
                        format!("{} (MAC {})", n.name, n.mac.as_deref().unwrap_or("?")),
                        sysfs.show(&n.devpath),
                    );
                }
                let unbound = if ev.parent_present {
                    if ev.parent_driver.is_some() {
                        ev.parent_net_hidden = sysfs.hidden_subdirs(&format!("{parent}/net"))?;
                        ev.fact(
                            "parent.net_hidden",
                            ev.parent_net_hidden.to_string(),
                            format!("{} (link count)", sysfs.show(&format!("{parent}/net"))),
                        );
                    }
                    ev.module = self.module(&parent, ev.driver.as_deref(), &mut ev.facts)?;
                    ev.parent_driver.is_none()
                } else if ev.device_present {
                    // The virtio device went, its PCI function stayed: the
                    // transport driver was unbound or unloaded.
                    ev.device_driver = sysfs.bound_driver(&device);
                    ev.fact(
                        "device.driver",
                        ev.device_driver
                            .clone()
                            .unwrap_or_else(|| "(unbound)".into()),
                        sysfs.show(&format!("{device}/driver")),
                    );
                    ev.transport = self.transport(&device, &mut ev.facts)?;
                    ev.device_driver.is_none()
                } else {
                    false
                };
                if unbound {
                    ev.slot = sysfs.pci_slot(&device)?;
                    if let Some(s) = &ev.slot {
                        ev.fact(
                            "pci_slot.power",
                            s.power.map_or("?", |p| if p { "on" } else { "off" }),
                            sysfs.show(&format!("/bus/pci/slots/{}/power", s.name)),
                        );
                    }
                }
            }
            Action::Move => {}
        }
        super::vf::gather(sysfs, &mut ev)?;
        Ok(ev)
    }

    /// A veth pair is deleted as a whole, but a netns move leaves the peer
    /// behind, its `iflink` still naming the moved end's ifindex.
    fn veth_peer(&self, ev: &mut Evidence) -> Result<()> {
        let Some(gone) = ev.gone_ifindex() else {
            return Ok(());
        };
        for name in self.sysfs.list_interfaces()? {
            let rel = format!("/class/net/{name}");
            let iflink = self.sysfs.read_attr(&format!("{rel}/iflink"))?;
            let ifindex = self.sysfs.read_attr(&format!("{rel}/ifindex"))?;
            if iflink == Some(gone.to_string()) && ifindex != Some(gone.to_string()) {
                ev.fact(
                    "veth.peer",
                    name.clone(),
                    self.sysfs.show(&format!("{rel}/iflink")),
                );
                ev.veth_peer = Some(name);
                break;
            }
        }
        Ok(())
    }

    /// Which module drives the device, and its state. The name comes from
    /// (first that answers) our record, the bound driver's `module` link,
    /// `/bus/<bus>/drivers/<driver>/module`, or the driver name itself.
    fn module(
        &self,
        parent: &str,
        driver: Option<&str>,
        facts: &mut Vec<Fact>,
    ) -> Result<Option<ModuleEvidence>> {
        let sysfs = self.sysfs;
        let recorded = self
            .record
            .as_ref()
            .filter(|r| driver.is_none() || r.driver.as_deref() == driver);
        let name = recorded
            .and_then(|r| r.module.clone())
            .or_else(|| sysfs.driver_module(parent))
            .or_else(|| {
                let bus = sysfs.link_name(&format!("{parent}/subsystem"))?;
                sysfs.link_name(&format!("/bus/{bus}/drivers/{}/module", driver?))
            })
            .or_else(|| driver.map(module_for_driver));
        let Some(name) = name else {
            return Ok(None);
        };
        let state = sysfs.module_state(&name)?;
        facts.push(Fact {
            name: format!("module.{name}"),
            value: state.as_str().to_string(),
            source: sysfs.show(&format!("/module/{name}/initstate")),
        });
        Ok(Some(ModuleEvidence {
            name,
            state,
            recorded_builtin: recorded.is_some_and(|r| r.builtin),
        }))
    }

    /// The module of a virtio NIC's transport (the PCI function's driver):
    /// from our record, the bound driver's `module` link, or, once unbound,
    /// `virtio_pci` for a PCI function.
    fn transport(&self, device: &str, facts: &mut Vec<Fact>) -> Result<Option<ModuleEvidence>> {
        let sysfs = self.sysfs;
        let recorded = self.record.as_ref().filter(|r| r.transport.is_some());
        let name = recorded
            .and_then(|r| r.transport.clone())
            .or_else(|| sysfs.driver_module(device))
            .or_else(|| {
                (sysfs.link_name(&format!("{device}/subsystem")).as_deref() == Some("pci"))
                    .then(|| "virtio_pci".to_string())
            });
        let Some(name) = name else {
            return Ok(None);
        };
        let state = sysfs.module_state(&name)?;
        facts.push(Fact {
            name: format!("transport.{name}"),
            value: state.as_str().to_string(),
            source: sysfs.show(&format!("/module/{name}/initstate")),
        });
        Ok(Some(ModuleEvidence {
            name,
            state,
            recorded_builtin: recorded.is_some_and(|r| r.transport_builtin),
        }))
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
