//! What reimage's tests run against, each started in one place: a real
//! OpenSSH sshd ([`sshd`]), the WinRM stand-in ([`winrm`]), the xCAT
//! stand-in ([`xcat`]), govmomi's vSphere simulator ([`vcsim`]) and a
//! throwaway PostgreSQL cluster ([`pg`]); and ports for them that no
//! parallel test can take ([`port`]).
//!
//! A crate of its own (a dev-dependency of reimage) because two test
//! targets start these: the library's unit tests (the SSH and WinRM
//! channels, in src/control) and the integration binary
//! (tests/integration); examples/site_bench.rs starts PostgreSQL from here
//! too. A crate is the one way they all share one copy without compiling
//! test code into the library or including files by path.

pub mod pg;
pub mod port;
pub mod sshd;
pub mod vcsim;
pub mod winrm;
pub mod xcat;
