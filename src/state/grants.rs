//! The grants of a computer: who may log in to it, for which reservation,
//! from where, since when (`grants.json`), and the password reimage gave
//! each user (`users/USER-password`, mode 0600). `grant` and `revoke`
//! write them under the computer's lock; `status` reads them.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::{FILE_MODE, RECORD_CAP, StateDir};

const GRANTS: &str = "grants.json";
const USERS: &str = "users";

/// One user's access to the computer, as `grant` left it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The reservation it was given for.
    pub reservation: String,
    /// The account on the computer.
    pub user: String,
    /// The addresses (ADDRESS or ADDRESS/PREFIX) the user's way in is open
    /// to, every grant's together.
    pub from: Vec<String>,
    /// Whether the account is an administrator (sudo, Administrators).
    pub admin: bool,
    /// The public keys put in its authorized_keys (Linux), every grant's.
    #[serde(default)]
    pub keys: usize,
    /// Where its password is kept, when it has one reimage set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Where to connect: address and port.
    pub address: String,
    /// The port of the user's way in (SSH 22, RDP 3389).
    pub port: u16,
    /// RFC 3339 time of the first grant.
    pub since: String,
    /// RFC 3339 time of the last grant.
    pub updated: String,
}

impl StateDir {
    /// The computer's grants; none when there is no record. A record that
    /// does not parse is an error: forgetting a grant would leave a user
    /// in.
    pub fn read_grants(&self, computer: &str) -> Result<Vec<Grant>> {
        match self.read_record(computer, GRANTS)? {
            None => Ok(Vec::new()),
            Some(text) => serde_json::from_slice(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} does not parse: {e}",
                    self.computer_dir(computer).join(GRANTS).display()
                )
            }),
        }
    }

    /// Records the computer's grants (atomically); none removes the record.
    pub fn write_grants(&self, computer: &str, grants: &[Grant]) -> Result<()> {
        let dir = self.made(computer)?;
        if grants.is_empty() {
            return dir.remove(GRANTS).map(|_| ());
        }
        dir.write_atomic(GRANTS, &serde_json::to_vec_pretty(grants)?, FILE_MODE)
    }

    /// Where the password reimage gave `user` on the computer is kept.
    pub fn user_password_file(&self, computer: &str, user: &str) -> PathBuf {
        self.computer_dir(computer)
            .join(USERS)
            .join(format!("{user}-password"))
    }

    /// Keeps `user`'s password (mode 0600, atomically).
    pub fn write_user_password(&self, computer: &str, user: &str, data: &[u8]) -> Result<()> {
        let dir = self.made(computer)?.dir(USERS, true)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{} vanished as it was made",
                self.computer_dir(computer).display()
            )
        })?;
        dir.write_atomic(&format!("{user}-password"), data, 0o600)
    }

    /// Removes `user`'s password file; false when there was none.
    pub fn remove_user_password(&self, computer: &str, user: &str) -> Result<bool> {
        let Some(dir) = self.computer(computer, false)? else {
            return Ok(false);
        };
        match dir.dir(USERS, false)? {
            Some(users) => users.remove(&format!("{user}-password")),
            None => Ok(false),
        }
    }

    /// Whether `user`'s password file is there (for tests and `status`).
    pub fn has_user_password(&self, computer: &str, user: &str) -> bool {
        self.computer(computer, false)
            .ok()
            .flatten()
            .and_then(|d| d.dir(USERS, false).ok().flatten())
            .and_then(|u| {
                u.read(&format!("{user}-password"), RECORD_CAP)
                    .ok()
                    .flatten()
            })
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(user: &str) -> Grant {
        Grant {
            reservation: "r1".into(),
            user: user.into(),
            from: vec!["192.0.2.0/24".into()],
            admin: false,
            keys: 1,
            password_file: None,
            address: "192.0.2.7".into(),
            port: 22,
            since: "2026-12-06T09:00:00Z".into(),
            updated: "2026-12-06T09:00:00Z".into(),
        }
    }

    #[test]
    fn grants_and_passwords_round_trip_under_the_computer() {
        let root = std::env::temp_dir().join(format!("reimage-grants-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let s = StateDir::new(&root);
        assert!(s.read_grants("pc7").expect("no record").is_empty());
        s.write_grants("pc7", &[grant("ann"), grant("bob")])
            .expect("written");
        let back = s.read_grants("pc7").expect("read");
        assert_eq!(back, [grant("ann"), grant("bob")]);
        s.write_user_password("pc7", "ann", b"pw\n").expect("kept");
        let file = s.user_password_file("pc7", "ann");
        assert_eq!(file, root.join("computers/pc7/users/ann-password"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("there")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(s.has_user_password("pc7", "ann"));
        assert!(s.remove_user_password("pc7", "ann").expect("removed"));
        assert!(!s.remove_user_password("pc7", "ann").expect("gone"));
        s.write_grants("pc7", &[]).expect("emptied");
        assert!(!root.join("computers/pc7/grants.json").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
