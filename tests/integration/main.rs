//! The integration tests: one binary, one module per area, all driving the
//! built `reimage` binary.

mod common;
mod sshd;
mod test;

mod core;
mod e2e;
mod libvirt;
mod man;
mod profiles;
mod qemu;
mod reuse;
mod ssh;
mod vsphere;
mod windows;
mod xcat;
