//! Kernel module state, from `/sys/module/<name>/initstate`.
//!
//! `modprobe -r` marks the module `going` before its exit function unbinds
//! the devices (which is what emits the net `remove`), and
//! `/sys/module/<name>` disappears once the module is freed. Built-in drivers
//! keep a `/sys/module/<name>` directory without `initstate`.

/// What `/sys/module/<name>` says about a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleState {
    Live,
    /// Loading: its init (and so the driver's probe) is running.
    Coming,
    /// Unloading: its exit is running.
    Going,
    /// Compiled into the kernel: cannot be unloaded.
    Builtin,
    /// No `/sys/module/<name>`: not loaded (freed, or never loaded).
    Absent,
    /// An `initstate` value this version does not know.
    Other(String),
}

impl ModuleState {
    pub fn as_str(&self) -> &str {
        match self {
            ModuleState::Live => "live",
            ModuleState::Coming => "coming",
            ModuleState::Going => "going",
            ModuleState::Builtin => "builtin",
            ModuleState::Absent => "absent",
            ModuleState::Other(s) => s,
        }
    }
}

/// Parses the content of an `initstate` file.
pub fn parse_initstate(s: &str) -> ModuleState {
    match s.trim() {
        "live" => ModuleState::Live,
        "coming" => ModuleState::Coming,
        "going" => ModuleState::Going,
        other => ModuleState::Other(other.to_string()),
    }
}

/// The module that provides a driver, for when sysfs can no longer tell us
/// (the driver directory is gone once the module is freed). Driver names that
/// differ from their module name are listed; otherwise the kernel's rule
/// applies (`-` in module names becomes `_`).
pub fn module_for_driver(driver: &str) -> String {
    match driver {
        // Xen netfront registers its driver as "vif".
        "vif" => "xen_netfront".to_string(),
        other => other.replace('-', "_"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initstate_values() {
        let table = [
            ("live\n", ModuleState::Live),
            ("coming\n", ModuleState::Coming),
            ("going", ModuleState::Going),
            (" going \n", ModuleState::Going),
            ("unformed\n", ModuleState::Other("unformed".into())),
            ("", ModuleState::Other(String::new())),
        ];
        for (input, want) in table {
            assert_eq!(parse_initstate(input), want, "{input:?}");
        }
    }

    #[test]
    fn driver_to_module_names() {
        let table = [
            ("ena", "ena"),
            ("vif", "xen_netfront"),
            ("ixgbevf", "ixgbevf"),
            ("virtio_net", "virtio_net"),
            ("mlx5-core", "mlx5_core"),
        ];
        for (driver, module) in table {
            assert_eq!(module_for_driver(driver), module);
        }
    }
}
