//! The local files a configuration names, as `check` looks at them: each
//! must be there and readable by the user reimage runs as, and a secret
//! (a private key, a password file) readable by no one else, as OpenSSH
//! wants of a private key. A run reads them only after the load; `check`
//! finds them before.

use std::path::{Path, PathBuf};

use super::error::KeyError;
use super::model::{Config, ImageConfig, OsConfig};

/// What a local file is to reimage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileUse {
    /// Read.
    Read,
    /// Read, and a secret: no one but its owner may read it.
    Secret,
    /// Run (a script or program): a file that can be executed.
    Run,
}

/// A file the configuration names, and the key that names it (from the
/// file's top).
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// The path as written.
    pub path: PathBuf,
    /// The key that names it.
    pub key: Vec<String>,
    /// How it is used.
    pub usage: FileUse,
}

impl LocalFile {
    /// The file at `path`, named at `key`.
    pub fn new(path: &Path, key: &[&str], usage: FileUse) -> LocalFile {
        LocalFile {
            path: path.to_path_buf(),
            key: key.iter().map(|k| k.to_string()).collect(),
            usage,
        }
    }

    /// Ok when the file is there, a regular file, readable now (and runnable
    /// for [`FileUse::Run`]), and for a secret not readable by group or
    /// others.
    pub fn check(&self) -> Result<(), KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path.display();
        let fail = |why: String| {
            let key: Vec<&str> = self.key.iter().map(String::as_str).collect();
            Err(KeyError::new(&key, why))
        };
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => return fail(format!("{p}: {}", io_words(&e))),
        };
        if !meta.is_file() {
            return fail(format!("{p} is not a regular file"));
        }
        if let Err(e) = std::fs::File::open(&self.path) {
            return fail(format!(
                "{p}: {} by the user reimage runs as (uid {})",
                io_words(&e),
                current_uid()
            ));
        }
        let mode = meta.permissions().mode();
        match self.usage {
            FileUse::Secret if mode & 0o044 != 0 => fail(format!(
                "{p} is a secret but readable by {} (mode {:04o}): `chmod go-rwx {p}`",
                if mode & 0o004 != 0 {
                    "everyone"
                } else {
                    "its group"
                },
                mode & 0o7777
            )),
            FileUse::Run if mode & 0o111 == 0 => fail(format!(
                "{p} is run but not executable (mode {:04o}): `chmod +x {p}`",
                mode & 0o7777
            )),
            _ => Ok(()),
        }
    }
}

/// An I/O error in words ("does not exist", "cannot be read"), without
/// Rust's "(os error 2)".
fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "cannot be read".into(),
        _ => format!("cannot be read: {e}"),
    }
}

fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Every file the OS profiles, images and `[coordination]` of `c` name.
pub fn config_files(c: &Config) -> Vec<LocalFile> {
    let mut v = Vec::new();
    if let Some(s) = &c.coordination {
        for (key, p, usage) in [
            ("password_file", &s.password_file, FileUse::Secret),
            ("ca_file", &s.ca_file, FileUse::Read),
        ] {
            if let Some(p) = p {
                v.push(LocalFile::new(p, &["coordination", key], usage));
            }
        }
    }
    for (name, o) in &c.os {
        os_files(name, o, &mut v);
    }
    for (name, img) in &c.images {
        image_files(name, img, &mut v);
    }
    v
}

fn os_files(name: &str, o: &OsConfig, v: &mut Vec<LocalFile>) {
    let mut add = |p: &Option<PathBuf>, key: &[&str], usage| {
        if let Some(p) = p {
            let mut k = vec!["os", name];
            k.extend_from_slice(key);
            v.push(LocalFile::new(p, &k, usage));
        }
    };
    add(&o.key_file, &["key_file"], FileUse::Secret);
    add(&o.password_file, &["password_file"], FileUse::Secret);
    add(
        &o.admin_password_file,
        &["admin_password_file"],
        FileUse::Secret,
    );
    add(&o.ca_file, &["ca_file"], FileUse::Read);
    add(&o.mak_file, &["mak_file"], FileUse::Secret);
    if let Some(d) = &o.domain {
        add(
            &Some(d.credentials_file.clone()),
            &["domain", "credentials_file"],
            FileUse::Secret,
        );
    }
}

fn image_files(name: &str, img: &ImageConfig, v: &mut Vec<LocalFile>) {
    for (i, script) in img.post_load.iter().enumerate() {
        let key = ["images", name, "post_load", &i.to_string()];
        v.push(LocalFile::new(script, &key, FileUse::Read));
    }
    for (key, p) in [
        ("kernel", &img.kernel),
        ("initrd", &img.initrd),
        ("domain_xml", &img.domain_xml),
    ] {
        if let Some(p) = p {
            v.push(LocalFile::new(p, &["images", name, key], FileUse::Read));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_there_readable_and_secrets_private() {
        let dir = std::env::temp_dir().join(format!("reimage-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("secret");
        std::fs::write(&f, "pw\n").expect("write");
        let mode = |m| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m));
        mode(0o600).expect("chmod");
        assert!(LocalFile::new(&f, &["k"], FileUse::Secret).check().is_ok());
        mode(0o640).expect("chmod");
        let e = LocalFile::new(&f, &["os", "p", "password_file"], FileUse::Secret)
            .check()
            .expect_err("group-readable");
        assert!(e.message.contains("readable by its group"), "{e:?}");
        assert_eq!(e.path, ["os", "p", "password_file"]);
        assert!(LocalFile::new(&f, &["k"], FileUse::Read).check().is_ok());
        let e = LocalFile::new(&f, &["k"], FileUse::Run)
            .check()
            .expect_err("not +x");
        assert!(e.message.contains("not executable"), "{e:?}");
        let e = LocalFile::new(&dir.join("none"), &["k"], FileUse::Read)
            .check()
            .expect_err("missing");
        assert!(e.message.contains("no such file"), "{e:?}");
        let e = LocalFile::new(&dir, &["k"], FileUse::Read)
            .check()
            .expect_err("dir");
        assert!(e.message.contains("not a regular file"), "{e:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
