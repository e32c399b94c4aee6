//! The state directory as a trust boundary, the way OpenSSH's StrictModes
//! treats `~/.ssh`: reimage (often root) writes there, so nobody else may
//! be able to put anything in it.
//!
//! - The state directory and every directory under it that reimage uses
//!   must be owned by the user running reimage (a run as root: by root; any
//!   other user: by that user or root) and writable by no group and no
//!   other user. The directories above the state directory must be owned by
//!   root or that user and writable by nobody else unless sticky (`/tmp`).
//!   Anything else is [`Refused`], naming the path and the fix.
//! - Below the state directory nothing is opened by path: each directory
//!   and file is opened relative to its directory's descriptor without
//!   following a symbolic link (`openat` with `O_NOFOLLOW`); a link is
//!   refused, never followed. A file must be a regular file (a FIFO or a
//!   device is refused before it is read); one reimage writes in place (the
//!   lock, the event log) must be its own and have one link.
//! - What reimage creates gets its mode set explicitly, whatever the umask:
//!   [`DIR_MODE`] for directories, [`FILE_MODE`] for files.
//! - Reads are bounded: [`Dir::read`] takes a cap and refuses a larger file.

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The mode of every directory reimage makes in the state directory.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file reimage makes in the state directory.
pub const FILE_MODE: u32 = 0o600;

/// A directory or file of the state directory that reimage will not use,
/// and how to make it usable. `main` exits 78 on it.
#[derive(Debug)]
pub struct Refused {
    /// What is refused.
    pub path: PathBuf,
    /// Why, e.g. "is writable by group or others (mode 0777)".
    pub why: String,
    /// What to do, e.g. "chmod go-w /srv/reimage".
    pub fix: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refusing {} which {}: reimage uses its state directory only when no other user can change it; {}",
            self.path.display(),
            self.why,
            self.fix
        )
    }
}

impl std::error::Error for Refused {}

fn refused(path: &Path, why: impl Into<String>, fix: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Refused {
        path: path.to_path_buf(),
        why: why.into(),
        fix: fix.into(),
    })
}

/// `path` as one shell word, for the fixes we print.
fn sh(path: &Path) -> String {
    let s = path.display().to_string();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The user reimage runs as, as `chown` takes it.
fn me() -> (u32, String) {
    let uid = rustix::process::geteuid().as_raw();
    let name = if uid == 0 {
        "root".to_string()
    } else {
        uid.to_string()
    };
    (uid, name)
}

/// May the owner `uid` own a directory reimage trusts? Its own user, or
/// root (a run as root takes root only).
fn owner_ok(uid: u32) -> bool {
    let (me, _) = me();
    uid == me || uid == 0
}

/// A directory of the state directory, open and checked.
#[derive(Debug)]
pub struct Dir {
    file: File,
    path: PathBuf,
}

/// How [`Dir::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only; a missing file is `None`.
    Read,
    /// Read and write, created ([`FILE_MODE`]) if missing, never truncated.
    ReadWrite,
    /// Appending, created ([`FILE_MODE`]) if missing.
    Append,
}

impl Dir {
    /// The state directory at `path` (the path the admin gave; links in it
    /// are followed), made with its missing parents when `create` (each
    /// [`DIR_MODE`]), then checked with the directories above it. `None`
    /// when it is missing and not to be made.
    pub fn root(path: &Path, create: bool) -> Result<Option<Dir>> {
        if create {
            make_dirs(path)
                .with_context(|| format!("cannot create state directory {}", path.display()))?;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if !create => return Ok(None),
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("cannot open state directory {}", path.display()));
            }
        };
        let dir = Dir {
            file: File::from(fd),
            path: path.to_path_buf(),
        };
        dir.check()?;
        check_above(path)?;
        Ok(Some(dir))
    }

    /// Its path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory `name` in this one, not through a link, made
    /// ([`DIR_MODE`]) when missing and `create`, then checked. `None` when
    /// it is missing and not to be made.
    pub fn dir(&self, name: &str, create: bool) -> Result<Option<Dir>> {
        let path = self.path.join(name);
        component(name, &path)?;
        let mut made = false;
        if create {
            match rustix::fs::mkdirat(&self.file, name, Mode::from_raw_mode(DIR_MODE)) {
                Ok(()) => made = true,
                Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.file, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if !create => return Ok(None),
            Err(e) => return Err(self.open_error(name, e)),
        };
        let dir = Dir {
            file: File::from(fd),
            path,
        };
        if made {
            // mkdir's mode went through the umask.
            set_mode(&dir.file, DIR_MODE, &dir.path)?;
        }
        dir.check()?;
        Ok(Some(dir))
    }

    /// The file `name` in this directory, not through a link: `None` when
    /// it is missing and `access` is [`Access::Read`]. Only a regular file
    /// is opened; one opened for writing must be this user's, with one
    /// link, and gets [`FILE_MODE`].
    pub fn open(&self, name: &str, access: Access) -> Result<Option<File>> {
        let path = self.path.join(name);
        component(name, &path)?;
        // NONBLOCK: a FIFO must not hang the open (it is refused below).
        let base = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let rw = match access {
            Access::Read => OFlags::RDONLY,
            Access::ReadWrite => OFlags::RDWR,
            Access::Append => OFlags::WRONLY | OFlags::APPEND,
        };
        let mode = Mode::from_raw_mode(FILE_MODE);
        let mut made = false;
        let fd = if access == Access::Read {
            match rustix::fs::openat(&self.file, name, base | rw, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(self.open_error(name, e)),
            }
        } else {
            // Made here (and then given its mode), or there already.
            let create = base | rw | OFlags::CREATE | OFlags::EXCL;
            match rustix::fs::openat(&self.file, name, create, mode) {
                Ok(fd) => {
                    made = true;
                    fd
                }
                Err(Errno::EXIST) => rustix::fs::openat(&self.file, name, base | rw, mode)
                    .map_err(|e| self.open_error(name, e))?,
                Err(e) => return Err(self.open_error(name, e)),
            }
        };
        let file = File::from(fd);
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if !meta.file_type().is_file() {
            return Err(refused(
                &path,
                "is not a regular file",
                format!(
                    "remove it (rm {}) after checking what put it there",
                    sh(&path)
                ),
            ));
        }
        if access != Access::Read {
            let (uid, who) = me();
            if meta.uid() != uid {
                return Err(refused(
                    &path,
                    format!("is owned by uid {}, not by {who}", meta.uid()),
                    format!(
                        "remove it (rm {}) after checking what put it there",
                        sh(&path)
                    ),
                ));
            }
            if meta.nlink() != 1 {
                return Err(refused(
                    &path,
                    format!("has {} hard links", meta.nlink()),
                    format!("remove it (rm {}); reimage makes a new one", sh(&path)),
                ));
            }
            if made || meta.mode() & 0o7777 != FILE_MODE {
                set_mode(&file, FILE_MODE, &path)?;
            }
        }
        // Back to blocking reads and writes.
        let flags = rustix::fs::fcntl_getfl(&file).map_err(std::io::Error::from)?;
        rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK).map_err(std::io::Error::from)?;
        Ok(Some(file))
    }

    /// The whole file `name`, if there is one and it holds at most `cap`
    /// bytes; a larger one is an error (it is not a file reimage wrote).
    pub fn read(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some(file) = self.open(name, Access::Read)? else {
            return Ok(None);
        };
        let path = self.path.join(name);
        let mut data = Vec::new();
        file.take(cap + 1)
            .read_to_end(&mut data)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if data.len() as u64 > cap {
            anyhow::bail!(
                "{} is larger than the {cap} bytes reimage reads of it: not a file reimage wrote; remove it",
                path.display()
            );
        }
        Ok(Some(data))
    }

    /// Replaces the file `name` with `data` atomically: a new file (mode
    /// `mode`) written, synced and renamed over it, then the directory
    /// synced. A reader sees the old file or the new one, never half; a
    /// link at `name` is replaced, not followed.
    pub fn write_atomic(&self, name: &str, data: &[u8], mode: u32) -> Result<()> {
        component(name, &self.path.join(name))?;
        replace(&self.file, &self.path, name, data, mode)
    }

    /// Renames the file `from` to `to` in this directory (replacing `to`
    /// atomically), then syncs the directory; false when there was no
    /// `from`. Links are renamed, never followed.
    pub fn rename(&self, from: &str, to: &str) -> Result<bool> {
        let (src, dst) = (self.path.join(from), self.path.join(to));
        component(from, &src)?;
        component(to, &dst)?;
        match rustix::fs::renameat(&self.file, from, &self.file, to) {
            Ok(()) => {
                let _ = rustix::fs::fsync(self.file.as_fd());
                Ok(true)
            }
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(std::io::Error::from(e))
                .with_context(|| format!("cannot rename {} to {}", src.display(), dst.display())),
        }
    }

    /// Removes the file `name`; false when there was none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        let path = self.path.join(name);
        component(name, &path)?;
        match rustix::fs::unlinkat(&self.file, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(std::io::Error::from(e))
                .with_context(|| format!("cannot remove {}", path.display())),
        }
    }

    /// The names of the entries of `kind` in this one (a link is a link,
    /// never what it points to).
    pub fn names(&self, kind: rustix::fs::FileType) -> Result<Vec<String>> {
        let mut rd = rustix::fs::Dir::read_from(&self.file)
            .with_context(|| format!("cannot list {}", self.path.display()))?;
        let mut names = Vec::new();
        while let Some(e) = rd.read() {
            let e = e.with_context(|| format!("cannot list {}", self.path.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let of_kind = match e.file_type() {
                rustix::fs::FileType::Unknown => {
                    rustix::fs::statat(&self.file, e.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == kind)
                }
                t => t == kind,
            };
            if of_kind {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The directory is this user's (or root's) and nobody else may write it.
    fn check(&self) -> Result<()> {
        let meta = self
            .file
            .metadata()
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        trusted(&self.path, &meta, false)
    }

    /// The error for a failed `openat` of `name`: a link (or something
    /// else where a directory belongs) is refused; the rest is an I/O
    /// error.
    fn open_error(&self, name: &str, e: Errno) -> anyhow::Error {
        let path = self.path.join(name);
        let link =
            rustix::fs::statat(&self.file, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
            });
        if link || e == Errno::LOOP {
            return refused(
                &path,
                "is a symbolic link, and reimage follows no link in its state directory",
                format!(
                    "remove the link (rm {}) after checking where it points and who made it",
                    sh(&path)
                ),
            );
        }
        if e == Errno::NOTDIR {
            return refused(
                &path,
                "is not a directory",
                format!(
                    "remove it (rm {}) after checking what put it there",
                    sh(&path)
                ),
            );
        }
        anyhow::Error::new(std::io::Error::from(e))
            .context(format!("cannot open {}", path.display()))
    }
}

/// One path component that names something in its directory: not empty,
/// not `.` or `..`, no `/` and no NUL.
fn component(name: &str, path: &Path) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        anyhow::bail!(
            "{}: `{}` is not a name in the state directory",
            path.display(),
            name.escape_debug()
        );
    }
    Ok(())
}

/// Is the directory `path` (as `meta` says) trusted: its owner this user
/// (or root), writable by nobody else; `above` (a directory above the state
/// directory) also lets a sticky one be writable by others.
fn trusted(path: &Path, meta: &std::fs::Metadata, above: bool) -> Result<()> {
    let (_, who) = me();
    if !meta.is_dir() {
        return Err(refused(
            path,
            "is not a directory",
            "give reimage a directory (--state-dir or state_dir)",
        ));
    }
    if !owner_ok(meta.uid()) {
        let fix = if above {
            format!(
                "put the state directory where only {who} and root can change the directories above it (--state-dir or state_dir)"
            )
        } else {
            format!(
                "check what is in it, then give it to {who} (chown -R {who} {}), or give reimage another --state-dir",
                sh(path)
            )
        };
        return Err(refused(
            path,
            format!("is owned by uid {}, not by {who}", meta.uid()),
            fix,
        ));
    }
    let mode = meta.mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(above && sticky) {
        let fix = if above {
            format!(
                "make it writable by its owner only (chmod go-w {}), or put the state directory elsewhere (--state-dir or state_dir)",
                sh(path)
            )
        } else {
            format!(
                "check what is in it, then make it writable by {who} only (chmod go-w {})",
                sh(path)
            )
        };
        return Err(refused(
            path,
            format!(
                "is writable by group or others (mode {:04o})",
                mode & 0o7777
            ),
            fix,
        ));
    }
    Ok(())
}

/// The directories above the state directory at `path`, both as written
/// and as its links resolve: each must be root's or this user's, and
/// writable by nobody else unless sticky; otherwise another user could
/// move the state directory away and put their own in its place. A link
/// as the state directory's own name must be root's or this user's too.
fn check_above(path: &Path) -> Result<()> {
    let given = std::path::absolute(path)
        .with_context(|| format!("cannot resolve state directory {}", path.display()))?;
    if let Ok(m) = std::fs::symlink_metadata(&given)
        && m.file_type().is_symlink()
        && !owner_ok(m.uid())
    {
        let (_, who) = me();
        return Err(refused(
            &given,
            format!("is a symbolic link owned by uid {}, not by {who}", m.uid()),
            "give reimage the directory it points to, after checking it (--state-dir or state_dir)",
        ));
    }
    let real = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve state directory {}", path.display()))?;
    for up in given.ancestors().skip(1).chain(real.ancestors().skip(1)) {
        let meta =
            std::fs::metadata(up).with_context(|| format!("cannot read {}", up.display()))?;
        trusted(up, &meta, true)?;
    }
    Ok(())
}

/// Makes `path` and its missing parents, each [`DIR_MODE`] whatever the
/// umask (directories that exist are left as they are).
pub fn make_dirs(path: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        match std::fs::symlink_metadata(at) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => at = p,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for dir in missing.into_iter().rev() {
        match rustix::fs::mkdir(dir, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rustix::fs::open(dir, flags, Mode::empty())?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE))?;
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn set_mode(file: &File, mode: u32, path: &Path) -> Result<()> {
    rustix::fs::fchmod(file, Mode::from_raw_mode(mode))
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// Writes `data` as `name` in the directory `dir` (at `dir_path`)
/// atomically, with `mode`: see [`Dir::write_atomic`].
fn replace(dir: &File, dir_path: &Path, name: &str, data: &[u8], mode: u32) -> Result<()> {
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    let tmp_path = dir_path.join(&tmp);
    let path = dir_path.join(name);
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    let result = (|| -> Result<()> {
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NOCTTY;
        let fd = rustix::fs::openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(mode))
            .map_err(std::io::Error::from)
            .with_context(|| format!("cannot write {}", tmp_path.display()))?;
        let mut f = File::from(fd);
        set_mode(&f, mode, &tmp_path)?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp_path.display()))?;
        drop(f);
        rustix::fs::renameat(dir, tmp.as_str(), dir, name)
            .map_err(std::io::Error::from)
            .with_context(|| {
                format!("cannot rename {} to {}", tmp_path.display(), path.display())
            })?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    result?;
    let _ = rustix::fs::fsync(dir.as_fd());
    Ok(())
}

/// What mode [`write_path`] gives the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewMode {
    /// [`FILE_MODE`] for a new file; a file there keeps its mode.
    KeepOrPrivate,
    /// 0644 for a new file (one other users' programs read, such as
    /// node_exporter); a file there keeps its mode.
    KeepOrReadable,
}

/// [`Dir::write_atomic`] for a file given by path, outside the checks of
/// the state directory (the directory is the caller's to trust): its
/// missing parents are made ([`DIR_MODE`]), and the last component is
/// replaced, never followed.
pub fn write_path(path: &Path, data: &[u8], new_mode: NewMode) -> Result<()> {
    let (dir_path, name) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(d), Some(n)) => (
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            },
            n,
        ),
        _ => anyhow::bail!("{} is not a file name", path.display()),
    };
    make_dirs(dir_path).with_context(|| format!("cannot create {}", dir_path.display()))?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = File::from(
        rustix::fs::open(dir_path, flags, Mode::empty())
            .map_err(std::io::Error::from)
            .with_context(|| format!("cannot open {}", dir_path.display()))?,
    );
    let mode = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st)
            if matches!(new_mode, NewMode::KeepOrPrivate | NewMode::KeepOrReadable)
                && rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::RegularFile =>
        {
            st.st_mode & 0o777
        }
        _ if new_mode == NewMode::KeepOrReadable => 0o644,
        _ => FILE_MODE,
    };
    replace(&dir, dir_path, name, data, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("reimage-trusted-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn made_with_their_modes_and_links_refused() {
        let root = tmp("modes");
        let d = Dir::root(&root.join("a/b"), true)
            .expect("root")
            .expect("made");
        assert_eq!(
            (mode(&root.join("a")), mode(&root.join("a/b"))),
            (0o700, 0o700)
        );
        let sub = d.dir("c", true).expect("dir").expect("made");
        assert_eq!(mode(&root.join("a/b/c")), 0o700);
        sub.open("f", Access::Append).expect("open").expect("made");
        assert_eq!(mode(&root.join("a/b/c/f")), 0o600);
        sub.write_atomic("g", b"x", FILE_MODE).expect("write");
        assert_eq!(mode(&root.join("a/b/c/g")), 0o600);
        assert_eq!(sub.read("g", 1).expect("read"), Some(b"x".to_vec()));
        assert!(sub.read("g", 0).is_err(), "over the cap");
        assert_eq!(sub.read("nothing", 1).expect("read"), None);
        // A link is refused, not followed, for files and directories.
        std::os::unix::fs::symlink("/etc/hostname", root.join("a/b/c/l")).expect("link");
        let e = sub.open("l", Access::ReadWrite).expect_err("a link");
        assert!(e.downcast_ref::<Refused>().is_some(), "{e:#}");
        assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
        std::os::unix::fs::symlink("/etc", root.join("a/b/d")).expect("link");
        let e = d.dir("d", false).expect_err("a link");
        assert!(e.downcast_ref::<Refused>().is_some(), "{e:#}");
        assert!(d.dir("..", false).is_err());
        assert_eq!(
            d.names(rustix::fs::FileType::Directory).expect("dirs"),
            vec!["c".to_string()]
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let root = tmp("loose");
        let d = Dir::root(&root, true).expect("root").expect("made");
        std::fs::create_dir(root.join("open")).expect("dir");
        std::fs::set_permissions(root.join("open"), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let e = d.dir("open", false).expect_err("world-writable");
        let text = format!("{e:#}");
        assert!(
            text.contains("mode 0777") && text.contains("chmod go-w"),
            "{text}"
        );
        drop(d);
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        assert!(Dir::root(&root, false).is_err(), "sticky is not enough");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_loose_directory_above_is_refused_unless_sticky() {
        let top = tmp("above");
        std::fs::create_dir_all(top.join("loose/state")).expect("dirs");
        chmod(&top.join("loose"), 0o777);
        let e = Dir::root(&top.join("loose/state"), false).expect_err("loose parent");
        assert!(
            format!("{e:#}").contains("loose which is writable by group or others"),
            "{e:#}"
        );
        chmod(&top.join("loose"), 0o1777);
        assert!(Dir::root(&top.join("loose/state"), false).is_ok(), "sticky");
        // The same directory through a link in a loose directory.
        std::fs::create_dir_all(top.join("open")).expect("dir");
        chmod(&top.join("open"), 0o777);
        std::os::unix::fs::symlink(top.join("loose/state"), top.join("open/state")).expect("link");
        assert!(
            Dir::root(&top.join("open/state"), false).is_err(),
            "the link's directory"
        );
        let _ = std::fs::remove_dir_all(&top);
    }

    fn chmod(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    }

    #[test]
    fn write_path_replaces_a_link_and_keeps_a_mode() {
        let root = tmp("path");
        std::fs::create_dir_all(&root).expect("dir");
        let target = root.join("target");
        std::fs::write(&target, "keep").expect("target");
        std::os::unix::fs::symlink(&target, root.join("f")).expect("link");
        write_path(&root.join("f"), b"new", NewMode::KeepOrPrivate).expect("write");
        assert_eq!(std::fs::read_to_string(&target).expect("target"), "keep");
        assert_eq!(std::fs::read_to_string(root.join("f")).expect("f"), "new");
        assert_eq!(mode(&root.join("f")), 0o600);
        std::fs::set_permissions(root.join("f"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        write_path(&root.join("f"), b"again", NewMode::KeepOrPrivate).expect("write");
        assert_eq!(mode(&root.join("f")), 0o644);
        let _ = std::fs::remove_dir_all(&root);
    }
}
