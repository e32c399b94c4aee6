//! The learned certificate of a computer's WinRM HTTPS listener
//! (`thumbprint = "accept-new"`), one small file in the computer's state
//! directory (see [`crate::state::StateDir::winrm_thumbprint`]):
//!
//! ```text
//! AB:CD:...:EF          the SHA-256 of the certificate, as govc prints it
//! replaceable           only right after a load began: the next OS may
//!                       have a new certificate
//! ```
//!
//! The policy, as SSH's `accept-new` with the load as the one moment a new
//! key is expected: no file, the first certificate seen is recorded; a
//! file, the certificate must match it, except on the first connection
//! after a load (the channel opened before a load marks the record
//! replaceable), which records what the loaded OS presents. Within a run
//! the certificate first accepted stays pinned.

use std::path::Path;

use crate::tls;

/// `thumbprint` of an OS profile: how the HTTPS listener's certificate is
/// pinned (the configuration keeps it as written, this channel decodes
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thumbprint {
    /// Exactly the certificate with this SHA-256.
    Pinned([u8; 32]),
    /// `accept-new`: learned on first use and kept in the state directory
    /// (see the module's doc); a different certificate is accepted only by
    /// the first connection after a load.
    AcceptNew,
}

impl std::str::FromStr for Thumbprint {
    type Err = String;

    /// Parses a SHA-256 thumbprint (hex, `:` optional) or `accept-new`.
    fn from_str(s: &str) -> Result<Thumbprint, String> {
        if s == "accept-new" {
            return Ok(Thumbprint::AcceptNew);
        }
        tls::parse_thumbprint(s)
            .map(Thumbprint::Pinned)
            .map_err(|e| format!("{e} (or \"accept-new\": learn it on the first load)"))
    }
}

/// What the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// SHA-256 of the certificate (DER).
    pub pin: [u8; 32],
    /// A load began since it was recorded.
    pub replaceable: bool,
}

/// Reads the record; Ok(None) when there is none yet.
pub fn read(file: &Path) -> Result<Option<Record>, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let pin = lines
        .next()
        .ok_or_else(|| format!("{} is empty", file.display()))
        .and_then(|l| tls::parse_thumbprint(l).map_err(|e| format!("{}: {e}", file.display())))?;
    let replaceable = match lines.next() {
        None => false,
        Some("replaceable") => true,
        Some(other) => {
            return Err(format!(
                "{}: unexpected line {other:?} (delete the file to learn the certificate anew)",
                file.display()
            ));
        }
    };
    Ok(Some(Record { pin, replaceable }))
}

/// Writes the record atomically.
pub fn write(file: &Path, r: &Record) -> anyhow::Result<()> {
    let mut text = tls::fmt_thumbprint(&r.pin);
    text.push('\n');
    if r.replaceable {
        text.push_str("replaceable\n");
    }
    crate::state::write_atomic(file, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thumbprint_setting_is_a_sha_256_or_accept_new() {
        assert_eq!("accept-new".parse(), Ok(Thumbprint::AcceptNew));
        assert_eq!("ab".repeat(32).parse(), Ok(Thumbprint::Pinned([0xAB; 32])));
        // A SHA-1 (what certlm.msc shows) is not a pin.
        let e = "AB:".repeat(20).parse::<Thumbprint>().expect_err("SHA-1");
        assert!(
            e.contains("the certificate's SHA-256") && e.contains("accept-new"),
            "{e}"
        );
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("reimage-pin-{}", std::process::id()));
        let file = dir.join("winrm-thumbprint");
        assert_eq!(read(&file), Ok(None));
        let r = Record {
            pin: [0xAB; 32],
            replaceable: true,
        };
        write(&file, &r).expect("write");
        assert_eq!(read(&file), Ok(Some(r)));
        let fixed = Record {
            replaceable: false,
            ..r
        };
        write(&file, &fixed).expect("write");
        assert_eq!(read(&file), Ok(Some(fixed)));
        std::fs::write(&file, "AB:CD\n").expect("write");
        assert!(read(&file).is_err());
        std::fs::write(&file, format!("{}\nmaybe\n", "AB".repeat(32))).expect("write");
        assert!(read(&file).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
