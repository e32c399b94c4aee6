//! What reimage's tests run against, each started in one place: a real
//! OpenSSH sshd ([`sshd`]).
//!
//! A crate of its own (a dev-dependency of reimage) because two test
//! targets start these: the library's unit tests (the SSH and WinRM
//! channels, in src/control) and the integration binary
//! (tests/integration). A crate is the one way both share one copy without
//! compiling test code into the library or including files by path.

pub mod sshd;
