//! The integration tests: one binary, one module per area, all driving the
//! built `reimage` binary.

mod common;
mod test;

mod check;
mod configs;
mod core;
mod debian;
mod e2e;
mod fleet;
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
mod term;
mod tree;
mod vsphere;
mod windows;
mod windows_access;
mod winrm_auth;
mod xcat;
