//! Sysfs fixtures of Azure and Google Cloud machines, from their real
//! layouts, and the DMI each cloud shows. Methods of [`Tree`].

use super::{ModKind, Tree};

/// Azure's DMI chassis asset tag.
pub const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";

/// Azure Gen2's VMBus (under ACPI0004); Gen1's is under the PCI host bridge.
pub const VMBUS_GEN2: &str = "/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00";
pub const VMBUS_GEN1: &str = "/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A03:00/device:07/VMBus:00";

/// The SR-IOV VF drivers of Azure's accelerated networking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vf {
    /// ConnectX-3: PCI driver `mlx4_core`, net driver `mlx4_en`.
    Mlx4,
    /// ConnectX-4/5: `mlx5_core` both.
    Mlx5,
    /// Microsoft Azure Network Adapter: `mana` both.
    Mana,
}

impl Vf {
    pub const ALL: [Vf; 3] = [Vf::Mlx4, Vf::Mlx5, Vf::Mana];

    /// The PCI driver (= its module).
    pub fn pci_driver(self) -> &'static str {
        match self {
            Vf::Mlx4 => "mlx4_core",
            Vf::Mlx5 => "mlx5_core",
            Vf::Mana => "mana",
        }
    }

    /// The net driver (`ID_NET_DRIVER`).
    pub fn net_driver(self) -> &'static str {
        match self {
            Vf::Mlx4 => "mlx4_en",
            Vf::Mlx5 => "mlx5_core",
            Vf::Mana => "mana",
        }
    }

    fn ids(self) -> (&'static str, &'static str) {
        match self {
            Vf::Mlx4 => ("0x15b3", "0x1004"),
            Vf::Mlx5 => ("0x15b3", "0x1016"),
            Vf::Mana => ("0x1414", "0x00ba"),
        }
    }
}

impl Tree {
    /// The DMI (and Xen hypervisor uuid) a cloud's VMs show:
    /// `ec2` (Nitro), `ec2-xen`, `azure`, `gce`, or `kvm` (no cloud).
    pub fn dmi(&self, cloud: &str) {
        let d = "/class/dmi/id";
        let (vendor, product, version, tag) = match cloud {
            "ec2" => ("Amazon EC2", "m6i.large", "", "Amazon EC2"),
            "ec2-xen" => ("Xen", "HVM domU", "4.11.amazon", ""),
            "azure" => (
                "Microsoft Corporation",
                "Virtual Machine",
                "7.0",
                AZURE_ASSET_TAG,
            ),
            "gce" => ("Google", "Google Compute Engine", "", ""),
            _ => ("QEMU", "Standard PC (Q35 + ICH9, 2009)", "pc-q35-7.2", ""),
        };
        self.write(&format!("{d}/sys_vendor"), &format!("{vendor}\n"));
        self.write(&format!("{d}/product_name"), &format!("{product}\n"));
        self.write(&format!("{d}/product_version"), &format!("{version}\n"));
        self.write(&format!("{d}/chassis_asset_tag"), &format!("{tag}\n"));
        if cloud == "ec2-xen" {
            self.write("/hypervisor/uuid", "ec2e1916-9099-7caf-fd21-012345abcdef\n");
        }
    }

    /// A VMBus device `guid` under `vmbus`, bound to `driver` (module `module`).
    fn vmbus_device(&self, vmbus: &str, guid: &str, driver: &str, module: &str) -> String {
        if !self.exists(&format!("/bus/vmbus/drivers/{driver}")) {
            self.driver("vmbus", driver, module, ModKind::Loadable);
        }
        let dev = format!("{vmbus}/{guid}");
        self.device(&dev, "vmbus", Some(driver));
        self.write(
            &format!("{dev}/class_id"),
            "{f8615163-df3e-46c5-913f-f2d2f965ed0e}\n",
        );
        dev
    }

    /// Azure's synthetic NIC: `hv_netvsc` on VMBus (`vmbus`: [`VMBUS_GEN2`]
    /// or [`VMBUS_GEN1`]).
    pub fn hv_netvsc(
        &self,
        vmbus: &str,
        guid: &str,
        iface: &str,
        mac: &str,
        ifindex: u32,
    ) -> String {
        let dev = self.vmbus_device(vmbus, guid, "hv_netvsc", "hv_netvsc");
        self.netdev(&dev, iface, mac, ifindex)
    }

    /// An accelerated networking VF: a Hyper-V PCI bus (`hv_pci`, module
    /// `pci_hyperv`) on its own VMBus device `guid`, PCI domain `dom`
    /// (four hex digits), the VF at `<dom>:00:02.0`, named `enP<dom>s1`.
    pub fn azure_vf(
        &self,
        vmbus: &str,
        guid: &str,
        dom: u16,
        vf: Vf,
        mac: &str,
        ifindex: u32,
    ) -> String {
        let bus = self.vmbus_device(vmbus, guid, "hv_pci", "pci_hyperv");
        if !self.exists(&format!("/bus/pci/drivers/{}", vf.pci_driver())) {
            self.driver("pci", vf.pci_driver(), vf.pci_driver(), ModKind::Loadable);
        }
        if vf == Vf::Mlx4 && !self.exists("/module/mlx4_en") {
            self.write("/module/mlx4_en/initstate", "live\n");
        }
        let func = format!("{bus}/pci{dom:04x}:00/{dom:04x}:00:02.0");
        self.device(&func, "pci", Some(vf.pci_driver()));
        let (vendor, device) = vf.ids();
        self.write(&format!("{func}/vendor"), &format!("{vendor}\n"));
        self.write(&format!("{func}/device"), &format!("{device}\n"));
        self.netdev(&func, &format!("enP{dom}s1"), mac, ifindex)
    }

    /// The host takes the VF away (servicing, live migration, accelerated
    /// networking off): the PCI function is unplugged and its Hyper-V PCI
    /// bus (the VMBus device) goes with it.
    pub fn revoke_vf(&self, devpath: &str) {
        self.hot_unplug(devpath);
        let func = devpath.rsplit_once("/net/").unwrap().0;
        let bus = func.rsplit_once("/pci").unwrap().0.to_string();
        let guid = bus.rsplit('/').next().unwrap().to_string();
        self.rm(&format!("/bus/vmbus/drivers/hv_pci/{guid}"));
        self.rm(&format!("/bus/vmbus/devices/{guid}"));
        self.rm(&bus);
    }

    /// A synthetic NIC's VMBus device vanishes (the NIC is removed).
    pub fn remove_vmbus_nic(&self, devpath: &str) {
        self.hot_unplug(devpath);
    }

    /// Google's gVNIC: `gve` on PCI (no hotplug slot: GCE adds no NICs to
    /// a running VM).
    pub fn gve(&self, slot: u8, iface: &str, mac: &str, ifindex: u32) -> String {
        if !self.exists("/bus/pci/drivers/gve") {
            self.driver("pci", "gve", "gve", ModKind::Loadable);
        }
        let parent = format!("/devices/pci0000:00/0000:00:{slot:02x}.0");
        self.device(&parent, "pci", Some("gve"));
        self.write(&format!("{parent}/vendor"), "0x1ae0\n");
        self.write(&format!("{parent}/device"), "0x0042\n");
        self.netdev(&parent, iface, mac, ifindex)
    }

    /// A VLAN NIC the Google guest agent creates on top of a NIC: virtual.
    pub fn gce_vlan(&self, iface: &str, mac: &str, ifindex: u32) -> String {
        self.netdev("/devices/virtual", iface, mac, ifindex)
    }
}
