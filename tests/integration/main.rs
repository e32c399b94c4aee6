//! The integration tests: one binary, one module per area, all driving the
//! built `reimage` binary.

mod common;
mod test;

mod configs;
mod core;
mod debian;
mod e2e;
mod grant;
mod harden;
mod idle;
mod libvirt;
mod man;
mod profiles;
mod qemu;
mod reuse;
mod site;
mod slurm;
mod ssh;
mod state;
mod tree;
mod vsphere;
mod windows;
mod winrm_auth;
mod xcat;
