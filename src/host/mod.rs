//! Every read of the host's device tree and kernel module state, through one
//! sysfs root (`--sysfs-root`), so tests can model the kernel with a tree.

pub mod cloud;
pub mod module;
pub mod sysfs;
