//! The state directory: per-computer lock (flock), last-run record, event
//! log, boot id before a load, and counting semaphores shared by reimage
//! processes. Every write is atomic (temp file, fsync, rename).
//!
//! The directory is a trust boundary ([`trusted`]): it and the directories
//! reimage uses in it must be this user's and writable by nobody else, and
//! every file in it is opened relative to its directory without following a
//! link. Every read of a record or an event log is bounded ([`lines`]).

mod grants;
mod lines;
mod trusted;

use anyhow::{Context, Result};

use crate::error::Error;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use grants::Grant;
pub use lines::{LINE_CAP, LOG_READ_CAP, Line, Lines, skip_partial, window};
pub use trusted::{Access, Dir, FILE_MODE, Refused, make_dirs};
use trusted::{NewMode, write_path};

use crate::backoff::Backoff;
use crate::names::names;
use crate::outcome::{Phase, Verdict};

/// The computer is locked by another run; `main` exits 73 on it.
#[derive(Debug)]
pub struct Locked {
    /// The computer.
    pub computer: String,
    /// The holder's pid, when it wrote one.
    pub pid: Option<u32>,
}

impl std::fmt::Display for Locked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(p) => write!(
                f,
                "computer `{}` is locked by another reimage run (pid {p}); wait for it to finish or stop it",
                self.computer
            ),
            None => write!(
                f,
                "computer `{}` is locked by another reimage run",
                self.computer
            ),
        }
    }
}

impl std::error::Error for Locked {}

enum LockError {
    Held(Locked),
    Io(anyhow::Error),
    Interrupted(crate::signal::Interrupted),
}

impl From<anyhow::Error> for LockError {
    fn from(e: anyhow::Error) -> LockError {
        LockError::Io(e)
    }
}

/// The state directory's format, in its `format` file. Raise it when a
/// file in the directory changes in a way an older reimage would misread.
pub const FORMAT: u32 = 1;

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// A held per-computer lock; released when dropped (and by the kernel when
/// the process dies, however it dies).
#[derive(Debug)]
pub struct Lock {
    file: File,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Emptied while still held: a pid read from a held lock is always
        // the holder's (a reader that finds it empty reads again).
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// How long a run that finds the lock held looks for the holder's pid (the
/// holder writes it just after taking the lock, and empties the file just
/// before letting go). Generous: the machine may be loaded.
const HOLDER_WAIT: Duration = Duration::from_secs(10);

/// What the last run on a computer did, for people and for scripts.
#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub struct LastRun {
    /// The command: provision, load or post-load.
    pub command: String,
    /// Image name.
    pub image: String,
    /// Reservation id.
    pub reservation: Option<String>,
    /// Last attempt number reached.
    pub attempt: u32,
    /// Attempts in all.
    pub of: u32,
    /// Last phase reached; written `""` before the first.
    #[serde(with = "phase_or_empty")]
    pub phase: Option<Phase>,
    /// Where the run stands.
    pub result: RunResult,
    /// The error, if any.
    pub message: Option<String>,
    /// Exit code, once finished.
    pub exit_code: Option<i32>,
    /// RFC 3339 start time.
    pub started: String,
    /// RFC 3339 time of this record.
    pub updated: String,
    /// The process that wrote it.
    pub pid: u32,
    /// When that process started (clock ticks after boot, see
    /// `exec::start_time`): with `pid` and `boot_id` it names the process,
    /// whose pid alone another process may get once it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// The boot that process ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// When the run before this one died while it ran: what it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Where the user connects: the address the OS showed on the public
    /// interface once the first boot configured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
}

/// A preload: reimage ran `provision` to ready for no reservation and then
/// read this boot id. `provision --reservation ID --reuse` skips the load
/// when the computer still answers with it and passes the image check.
/// Every run on the computer takes the record away when it starts (see
/// [`StateDir::take_preload`]), so the record means "nobody has had it
/// since", and a computer handed to a reservation is never reused.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Preload {
    /// The image loaded and verified.
    pub image: String,
    /// The boot id read once the preload was ready.
    pub boot_id: String,
    /// RFC 3339 time the preload was verified.
    pub verified: String,
    /// The run that made it (its pid), for people reading the file.
    pub pid: u32,
}

/// Where a run stands in its last-run record.
#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(into = "&'static str", try_from = "String")]
pub enum RunResult {
    /// Still going.
    #[default]
    Running,
    /// The last phase was done.
    Done,
    /// The last phase asked for a retry.
    Retry,
    /// The last phase failed, or the attempts are spent.
    Fatal,
    /// Stopped by a signal.
    Interrupted,
}

names!(RunResult {
    Running => "running",
    Done => "done",
    Retry => "retry",
    Fatal => "fatal",
    Interrupted => "interrupted",
});

impl From<Verdict> for RunResult {
    fn from(v: Verdict) -> RunResult {
        match v {
            Verdict::Done => RunResult::Done,
            Verdict::Retry => RunResult::Retry,
            Verdict::Fatal => RunResult::Fatal,
        }
    }
}

/// `phase` as the record has always had it: the phase's name, or `""`
/// before the first phase.
mod phase_or_empty {
    use super::Phase;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(p: &Option<Phase>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.map_or("", Phase::name))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Phase>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        Phase::try_from(s).map(Some).map_err(D::Error::custom)
    }
}

/// The pid written in a lock file, if there is one (a pid is a few bytes;
/// no more is read).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// The most bytes of a record (last-run, preload, boot id, format) that
/// are read; a larger file is not one reimage wrote, and is refused.
const RECORD_CAP: u64 = 1 << 20;

/// The names of the files and directories of the layout.
const COMPUTERS: &str = "computers";
const SLOTS: &str = "slots";
const FORMAT_FILE: &str = "format";
const LOCK: &str = "lock";
const EVENTS: &str = "events.jsonl";
const LAST_RUN: &str = "last-run.json";
const PRELOAD: &str = "preload.json";
const TREE: &str = "tree.json";
const BOOT_ID: &str = "boot-id-before-load";
const METRICS: &str = "metrics.json";
const METRICS_LOCK: &str = "metrics.lock";

/// Where a password of an account that first boot sets is kept, by what
/// the computer did with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Password {
    /// Set, and the OS took it, with no load since: what the account has
    /// now (`ACCOUNT-password`).
    Kept,
    /// Written before the first boot sets it, not yet taken
    /// (`ACCOUNT-password.new`): a run that ended while setting it may or
    /// may not have left it on the computer.
    Pending,
    /// The kept one as it was when a load started (`ACCOUNT-password.before-load`):
    /// what the account has if that load never reached the disk.
    BeforeLoad,
}

/// The file name of `account`'s password in `slot`.
fn password_name(account: &str, slot: Password) -> String {
    let base = format!("{}-password", account.to_ascii_lowercase());
    match slot {
        Password::Kept => base,
        Password::Pending => format!("{base}.new"),
        Password::BeforeLoad => format!("{base}.before-load"),
    }
}

/// The longest computer name (a DNS label's length).
pub const MAX_NAME_LEN: usize = 63;

/// A computer's name becomes a directory and a lock in the state dir, so it
/// must be one plain path component that no other name aliases: letters,
/// digits, `-`, `_` and `.`, starting with a letter or digit, at most
/// [`MAX_NAME_LEN`] bytes. `reimage log` takes nothing else.
pub fn check_computer_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok_chars && ok_start && name.len() <= MAX_NAME_LEN {
        return Ok(());
    }
    Err(format!(
        "computer name {:?} is not allowed: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit (it names a directory in the state dir)",
        name
    ))
}

/// `e` from the state directory as the run's error: a refusal (see
/// [`trusted`]) or a directory reimage cannot write (read-only, full, not
/// a directory, not ours to write) is the setup's fault (78), with what to
/// do; anything else is fatal.
pub fn setup_error(e: anyhow::Error, root: &Path) -> Error {
    if e.downcast_ref::<Refused>().is_some() {
        return Error::Config(format!("{e:#}"));
    }
    use std::io::ErrorKind as K;
    let kind = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let fix = match kind {
        Some(K::ReadOnlyFilesystem | K::PermissionDenied | K::NotADirectory) => {
            "give reimage a state directory it can write (--state-dir or state_dir)"
        }
        Some(K::StorageFull | K::QuotaExceeded | K::FileTooLarge) => {
            "free space where the state directory is, or give reimage another (--state-dir or state_dir)"
        }
        _ => return Error::Fatal(e),
    };
    Error::Config(format!(
        "{e:#}; reimage loads no computer without its lock and records in the state directory {}: {fix}",
        root.display()
    ))
}

/// Takes the exclusive lock (flock(2), by std) on `file` without waiting;
/// Ok(false) when another process holds it.
fn try_lock(file: &File, path: &Path) -> Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

impl StateDir {
    /// The state directory at `root` (created on first use).
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    /// The state directory at `root`, created root-only (it holds secrets)
    /// if missing, checked as a trust boundary ([`trusted`]; refused with
    /// 78), and checked for its format: a directory without a `format` file
    /// gets the current one; one a newer reimage wrote is refused rather
    /// than misread.
    pub fn open(root: &Path) -> Result<StateDir, Error> {
        let dir = Dir::root(root, true)
            .map_err(|e| setup_error(e, root))?
            .ok_or_else(|| {
                Error::Fatal(anyhow::anyhow!(
                    "state directory {} vanished as it was made",
                    root.display()
                ))
            })?;
        let path = root.join(FORMAT_FILE);
        let text = dir
            .read(FORMAT_FILE, RECORD_CAP)
            .map_err(|e| setup_error(e, root))?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        match text {
            Some(text) => match text.trim().parse::<u32>() {
                Ok(FORMAT) => {}
                Ok(n) if n > FORMAT => {
                    return Err(Error::Fatal(anyhow::anyhow!(
                        "state directory {} has format {n}, written by a newer reimage; this one knows format {FORMAT}: upgrade reimage, or give this one another --state-dir",
                        root.display()
                    )));
                }
                _ => {
                    return Err(Error::Fatal(anyhow::anyhow!(
                        "{} says `{}`, not a state directory format this reimage knows ({FORMAT}): restore it, or give reimage another --state-dir",
                        path.display(),
                        text.trim()
                    )));
                }
            },
            None => {
                dir.write_atomic(FORMAT_FILE, format!("{FORMAT}\n").as_bytes(), FILE_MODE)
                    .map_err(|e| setup_error(e, root))?;
            }
        }
        Ok(StateDir::new(root))
    }

    /// Where it is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The state directory, checked; made when missing and `create`.
    pub fn root_dir(&self, create: bool) -> Result<Option<Dir>> {
        Dir::root(&self.root, create)
    }

    /// The directory of one computer, checked (and the ones above it); made
    /// when missing and `create`. `None` when missing.
    pub fn computer(&self, computer: &str, create: bool) -> Result<Option<Dir>> {
        let Some(root) = self.root_dir(create)? else {
            return Ok(None);
        };
        let Some(all) = root.dir(COMPUTERS, create)? else {
            return Ok(None);
        };
        all.dir(computer, create)
    }

    fn made(&self, computer: &str) -> Result<Dir> {
        self.computer(computer, true)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{} vanished as it was made",
                self.computer_dir(computer).display()
            )
        })
    }

    /// The computer's file `name`, whole (at most [`RECORD_CAP`] bytes), if
    /// there is one.
    fn read_record(&self, computer: &str, name: &str) -> Result<Option<Vec<u8>>> {
        match self.computer(computer, false)? {
            Some(dir) => dir.read(name, RECORD_CAP),
            None => Ok(None),
        }
    }

    // The layout, known here only: STATE_DIR/format, STATE_DIR/known_hosts,
    // STATE_DIR/slots/NAME/slot-K, and per computer STATE_DIR/computers/NAME/
    // with lock, last-run.json, events.jsonl, preload.json, tree.json,
    // boot-id-before-load, known_hosts.before-load, ACCOUNT-password (with
    // .new and .before-load), winrm-thumbprint, metrics.json, grants.json
    // and users/USER-password (`grants`); STATE_DIR/metrics.lock.

    /// The directory that holds one directory per computer.
    pub fn computers_dir(&self) -> PathBuf {
        self.root.join("computers")
    }

    /// The directory of one computer.
    pub fn computer_dir(&self, computer: &str) -> PathBuf {
        self.computers_dir().join(computer)
    }

    /// The computers that have a directory here (that is, records of runs
    /// on this host): none when there is no state directory yet.
    pub fn computers(&self) -> Result<BTreeSet<String>> {
        let Some(root) = self.root_dir(false)? else {
            return Ok(BTreeSet::new());
        };
        let Some(all) = root.dir(COMPUTERS, false)? else {
            return Ok(BTreeSet::new());
        };
        Ok(all
            .names(rustix::fs::FileType::Directory)?
            .into_iter()
            .collect())
    }

    /// The computer's append-only event log.
    pub fn event_log(&self, computer: &str) -> PathBuf {
        self.computer_dir(computer).join(EVENTS)
    }

    /// The computer's event log open for appending (made if missing).
    pub fn append_event_log(&self, computer: &str) -> Result<File> {
        self.made(computer)?
            .open(EVENTS, Access::Append)?
            .ok_or_else(|| anyhow::anyhow!("{} vanished", self.event_log(computer).display()))
    }

    /// The computer's event log open for reading; `None` when it has none.
    pub fn read_event_log(&self, computer: &str) -> Result<Option<File>> {
        match self.computer(computer, false)? {
            Some(dir) => dir.open(EVENTS, Access::Read),
            None => Ok(None),
        }
    }

    /// Replaces the computer's event log with `data` (atomically).
    pub fn replace_event_log(&self, computer: &str, data: &[u8]) -> Result<()> {
        self.made(computer)?.write_atomic(EVENTS, data, FILE_MODE)
    }

    /// Where the computer's running (or killed) run says it holds its
    /// commands' processes (its cgroup and marker, see `tree`): for
    /// messages; read and write it with the functions below.
    pub fn tree_file(&self, computer: &str) -> PathBuf {
        self.computer_dir(computer).join(TREE)
    }

    /// Records where the run's commands live (atomically).
    pub fn write_tree(&self, computer: &str, data: &[u8]) -> Result<()> {
        self.made(computer)?.write_atomic(TREE, data, FILE_MODE)
    }

    /// The tree record, if there is one (bounded like every record).
    pub fn read_tree(&self, computer: &str) -> Result<Option<Vec<u8>>> {
        self.read_record(computer, TREE)
    }

    /// Removes the tree record, if there is one.
    pub fn remove_tree(&self, computer: &str) -> Result<()> {
        if let Some(dir) = self.computer(computer, false)? {
            dir.remove(TREE)?;
        }
        Ok(())
    }

    /// The computer's last-run record ([`LastRun`], as JSON).
    pub fn last_run_file(&self, computer: &str) -> PathBuf {
        self.computer_dir(computer).join(LAST_RUN)
    }

    /// The last-run record's bytes, for readers that parse it their own
    /// way (`status`).
    pub fn last_run_bytes(&self, computer: &str) -> Result<Option<Vec<u8>>> {
        self.read_record(computer, LAST_RUN)
    }

    /// Where the password first boot set for `account` (Administrator,
    /// root) on the computer is kept: `administrator-password`,
    /// `root-password` ([`Password::Kept`]); the other slots add
    /// `.new` and `.before-load`.
    pub fn password_file(&self, computer: &str, account: &str) -> PathBuf {
        self.password_path(computer, account, Password::Kept)
    }

    /// The file of `account`'s password in `slot`, for messages.
    pub fn password_path(&self, computer: &str, account: &str, slot: Password) -> PathBuf {
        self.computer_dir(computer)
            .join(password_name(account, slot))
    }

    /// Writes `account`'s password `value` into `slot` (mode 0600,
    /// atomically).
    pub fn write_password(
        &self,
        computer: &str,
        account: &str,
        slot: Password,
        value: &Secret,
    ) -> Result<()> {
        let data = format!("{}\n", value.expose());
        self.made(computer)?
            .write_atomic(&password_name(account, slot), data.as_bytes(), FILE_MODE)
    }

    /// `account`'s password in `slot`, if there is one (its first line).
    pub fn read_password(
        &self,
        computer: &str,
        account: &str,
        slot: Password,
    ) -> Result<Option<Secret>> {
        let Some(data) = self.read_record(computer, &password_name(account, slot))? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&data);
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        Ok((!line.is_empty()).then(|| Secret::new(line)))
    }

    /// The OS took the pending password of `account`: it becomes the kept
    /// one (renamed over it), and the one from before the last load goes.
    /// False when no password was pending.
    pub fn commit_password(&self, computer: &str, account: &str) -> Result<bool> {
        let dir = self.made(computer)?;
        let kept = password_name(account, Password::Kept);
        if !dir.rename(&password_name(account, Password::Pending), &kept)? {
            return Ok(false);
        }
        dir.remove(&password_name(account, Password::BeforeLoad))?;
        Ok(true)
    }

    /// A load is about to put the image on the computer: the kept password
    /// of `account` becomes the one from before the load (the image brings
    /// its own); nothing changes when none is kept.
    pub fn password_before_load(&self, computer: &str, account: &str) -> Result<()> {
        if let Some(dir) = self.computer(computer, false)? {
            dir.rename(
                &password_name(account, Password::Kept),
                &password_name(account, Password::BeforeLoad),
            )?;
        }
        Ok(())
    }

    /// The SSH host keys of every computer, under its name (the default of
    /// the profile's `known_hosts`).
    pub fn known_hosts(&self) -> PathBuf {
        self.root.join("known_hosts")
    }

    /// Scratch host keys for the look at the computer before a load, which
    /// must not touch the real ones.
    pub fn known_hosts_before_load(&self, computer: &str) -> PathBuf {
        self.computer_dir(computer).join("known_hosts.before-load")
    }

    /// The SHA-256 of the computer's WinRM HTTPS certificate as learned
    /// under `thumbprint = "accept-new"` (written by the WinRM channel).
    pub fn winrm_thumbprint(&self, computer: &str) -> PathBuf {
        self.computer_dir(computer).join("winrm-thumbprint")
    }

    /// The directory of semaphore `name`, checked; made when `create`.
    fn slots_dir(&self, name: &str, create: bool) -> Result<Option<Dir>> {
        let Some(root) = self.root_dir(create)? else {
            return Ok(None);
        };
        let Some(all) = root.dir(SLOTS, create)? else {
            return Ok(None);
        };
        all.dir(name, create)
    }

    /// Takes the computer's lock at once, or fails with
    /// [`Error::Locked`] naming the holder (exit 73). A signal that comes
    /// before or while it looks for the holder ends it with
    /// [`Error::Interrupted`] (exit 143 for SIGTERM), also when the lock
    /// came free meanwhile: a run that was told to stop never starts.
    pub fn lock(&self, computer: &str) -> Result<Lock, Error> {
        self.try_lock(computer).map_err(|e| match e {
            LockError::Held(l) => Error::Locked(l.to_string()),
            LockError::Io(e) => setup_error(e, &self.root),
            LockError::Interrupted(i) => Error::Interrupted(i),
        })
    }

    fn try_lock(&self, computer: &str) -> Result<Lock, LockError> {
        let path = self.computer_dir(computer).join(LOCK);
        let mut file = self
            .made(computer)?
            .open(LOCK, Access::ReadWrite)?
            .ok_or_else(|| anyhow::anyhow!("{} vanished", path.display()))?;
        let start = Instant::now();
        let mut pause = Backoff::new(Duration::from_millis(5), Duration::from_millis(100));
        while !try_lock(&file, &path)? {
            // Held. The pid in the file is the holder's once it is there
            // and alive; empty or dead means the holder is between taking
            // the lock and writing its pid, or between emptying the file and
            // letting go: look again (and try the lock again).
            let holder =
                read_pid(&mut file).filter(|&p| i32::try_from(p).is_ok_and(crate::exec::alive));
            if holder.is_some() || start.elapsed() >= HOLDER_WAIT {
                return Err(LockError::Held(Locked {
                    computer: computer.into(),
                    pid: holder,
                }));
            }
            crate::signal::sleep(pause.next_pause()).map_err(LockError::Interrupted)?;
        }
        // Taken, but a signal came on the way: let go (the drop) and stop.
        crate::signal::check().map_err(LockError::Interrupted)?;
        let mark = |file: &mut File| -> std::io::Result<()> {
            // One write at offset 0, then the length: a reader sees the
            // old text, or the pid, never a mix of both.
            use std::os::unix::fs::FileExt;
            let pid = std::process::id().to_string();
            file.write_all_at(pid.as_bytes(), 0)?;
            file.set_len(pid.len() as u64)
        };
        mark(&mut file).with_context(|| format!("cannot write lock file {}", path.display()))?;
        Ok(Lock { file })
    }

    /// True when a run holds the computer's lock now (this host, this
    /// state directory); false when none does or there is no lock file.
    pub fn lock_held(&self, computer: &str) -> bool {
        let Ok(Some(file)) = self
            .computer(computer, false)
            .and_then(|d| d.map_or(Ok(None), |d| d.open(LOCK, Access::Read)))
        else {
            return false;
        };
        matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        )
    }

    /// Records the last run (atomically).
    pub fn write_last_run(&self, computer: &str, r: &LastRun) -> Result<()> {
        let text = serde_json::to_vec_pretty(r)?;
        self.made(computer)?
            .write_atomic(LAST_RUN, &text, FILE_MODE)
    }

    /// The last-run record, if there is one that parses.
    pub fn read_last_run(&self, computer: &str) -> Option<LastRun> {
        let text = self.read_record(computer, LAST_RUN).ok()??;
        serde_json::from_slice(&text).ok()
    }

    /// Records a verified preload (atomically).
    pub fn write_preload(&self, computer: &str, p: &Preload) -> Result<()> {
        self.made(computer)?
            .write_atomic(PRELOAD, &serde_json::to_vec_pretty(p)?, FILE_MODE)
    }

    /// The preload record, if there is one (for `check`); a record that
    /// does not parse is none. Err when the state directory is refused.
    pub fn read_preload(&self, computer: &str) -> Result<Option<Preload>> {
        Ok(self
            .read_record(computer, PRELOAD)
            .or_else(|e| match e.downcast_ref::<Refused>() {
                Some(_) => Err(e),
                None => Ok(None),
            })?
            .and_then(|text| serde_json::from_slice(&text).ok()))
    }

    /// Takes the preload record away: called by every run when it starts,
    /// under the computer's lock, so a record is used at most once. Err
    /// when a record exists but cannot be removed: then nothing may be
    /// reused, and the caller says so.
    pub fn take_preload(&self, computer: &str) -> Result<Option<Preload>> {
        let p = self.read_preload(computer)?;
        let Some(dir) = self.computer(computer, false)? else {
            return Ok(None);
        };
        match dir.remove(PRELOAD) {
            Ok(true) => Ok(p),
            Ok(false) => Ok(None),
            Err(e) => Err(e.context("cannot remove the preload record")),
        }
    }

    /// Records what `[metrics]` keeps of the computer's runs (atomically).
    pub fn write_metrics(&self, computer: &str, data: &[u8]) -> Result<()> {
        self.made(computer)?.write_atomic(METRICS, data, FILE_MODE)
    }

    /// What `[metrics]` keeps of the computer's runs, if anything.
    pub fn read_metrics(&self, computer: &str) -> Result<Option<Vec<u8>>> {
        self.read_record(computer, METRICS)
    }

    /// Takes the lock every writer of the metrics textfile holds while it
    /// reads the computers' metrics and replaces the file, so a run's
    /// update is never overwritten by another's older view. Waits up to
    /// `wait`; `None` when it did not come free.
    pub fn metrics_lock(&self, wait: Duration) -> Result<Option<File>> {
        let root = self
            .root_dir(true)?
            .ok_or_else(|| anyhow::anyhow!("{} vanished", self.root.display()))?;
        let path = self.root.join(METRICS_LOCK);
        let file = root
            .open(METRICS_LOCK, Access::ReadWrite)?
            .ok_or_else(|| anyhow::anyhow!("{} vanished", path.display()))?;
        let start = Instant::now();
        let mut pause = Backoff::new(Duration::from_millis(5), Duration::from_millis(100));
        while !try_lock(&file, &path)? {
            if start.elapsed() >= wait {
                return Ok(None);
            }
            crate::signal::sleep(pause.next_pause())?;
        }
        Ok(Some(file))
    }

    /// Remembers the computer's boot id seen before a load (or forgets it).
    pub fn write_boot_id(&self, computer: &str, id: Option<&str>) -> Result<()> {
        let dir = self.made(computer)?;
        match id {
            Some(id) => dir.write_atomic(BOOT_ID, id.as_bytes(), FILE_MODE),
            None => dir.remove(BOOT_ID).map(|_| ()),
        }
    }

    /// The boot id seen before the last load, if one was seen.
    pub fn read_boot_id(&self, computer: &str) -> Option<String> {
        let s = self.read_record(computer, BOOT_ID).ok()??;
        let s = String::from_utf8_lossy(&s).trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// Takes one of `max` slots named `name`, shared by every reimage
    /// process using this state directory (a counting semaphore of flocks:
    /// a crashed holder's slot frees itself). Waits up to `wait`, calling
    /// `waiting` with the elapsed time while it waits.
    pub fn acquire_slot(
        &self,
        name: &str,
        max: u32,
        wait: Duration,
        mut waiting: impl FnMut(Duration),
    ) -> Result<Option<Slot>> {
        let dir = self
            .slots_dir(name, true)?
            .ok_or_else(|| anyhow::anyhow!("the slots of `{name}` vanished as they were made"))?;
        // Opened once; each poll only tries the locks.
        let mut files = (0..max.max(1))
            .map(|i| {
                let file = format!("slot-{i}");
                dir.open(&file, Access::ReadWrite)?
                    .ok_or_else(|| anyhow::anyhow!("{} vanished", dir.path().join(&file).display()))
            })
            .collect::<Result<Vec<File>>>()?;
        let start = Instant::now();
        let mut pause = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        loop {
            if let Some(i) = files.iter().position(|f| f.try_lock().is_ok()) {
                let file = files.swap_remove(i);
                let _ = file.set_len(0);
                let _ = (&file).write_all(std::process::id().to_string().as_bytes());
                return Ok(Some(Slot { file }));
            }
            crate::signal::check()?;
            if start.elapsed() >= wait {
                return Ok(None);
            }
            waiting(start.elapsed());
            crate::signal::sleep(pause.next_pause())?;
        }
    }
}

/// A held semaphore slot; freed when dropped or when the process dies.
#[derive(Debug)]
pub struct Slot {
    file: File,
}

impl Slot {
    /// Writes what the slot is held for (e.g. a node name) next to the
    /// holder's pid, for [`StateDir::slot_labels`].
    pub fn label(&self, text: &str) {
        let _ = self.file.set_len(0);
        let line = format!("{} {text}", std::process::id());
        let _ = self.file.write_all_at(line.as_bytes(), 0);
    }
}

impl StateDir {
    /// The labels of the slots of semaphore `name` that are held now (by
    /// any process, this one included). A slot is held while its file is
    /// locked; a free slot's stale label is not returned.
    pub fn slot_labels(&self, name: &str) -> Vec<String> {
        let Ok(Some(dir)) = self.slots_dir(name, false) else {
            return Vec::new();
        };
        let Ok(entries) = dir.names(rustix::fs::FileType::RegularFile) else {
            return Vec::new();
        };
        let mut labels = Vec::new();
        for e in entries {
            let Ok(Some(file)) = dir.open(&e, Access::Read) else {
                continue;
            };
            if file.try_lock_shared().is_ok() {
                // Free: nobody holds it (the lock goes with the file).
                continue;
            }
            let mut text = String::new();
            // A label is a pid and a node name: a few bytes.
            if file.take(4096).read_to_string(&mut text).is_ok()
                && let Some((_, label)) = text.trim().split_once(' ')
            {
                labels.push(label.to_string());
            }
        }
        labels.sort();
        labels
    }
}

/// Writes `data` to `path` atomically: a temp file in the same directory
/// (made, [`DIR_MODE`], if missing), fsync, rename, fsync of the directory.
/// A reader sees the old or the new file, never half of one; a failed
/// write leaves no temp file behind; a link at `path` is replaced, never
/// followed. A new file gets [`FILE_MODE`], one there keeps its mode. For
/// files given by path (SSH host keys, a provisioner's own files); the
/// files of the layout go through [`Dir`].
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_path(path, data, NewMode::KeepOrPrivate)
}

/// [`write_atomic`] for a file other users' programs read: a new file
/// gets mode 0644.
pub fn write_readable(path: &Path, data: &[u8]) -> Result<()> {
    write_path(path, data, NewMode::KeepOrReadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("reimage-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_password_is_kept_only_once_taken_and_set_aside_by_a_load() {
        let root = tmp("passwords");
        let s = StateDir::new(&root);
        let read = |slot| {
            s.read_password("pc7", "Administrator", slot)
                .expect("read")
                .map(|p| p.expose().to_string())
        };
        s.write_password(
            "pc7",
            "Administrator",
            Password::Pending,
            &Secret::new("one"),
        )
        .expect("write");
        assert_eq!(read(Password::Kept), None);
        assert!(s.commit_password("pc7", "Administrator").expect("commit"));
        assert_eq!(read(Password::Kept).as_deref(), Some("one"));
        assert_eq!(read(Password::Pending), None);
        // A second password, never taken: the first stays kept.
        s.write_password(
            "pc7",
            "Administrator",
            Password::Pending,
            &Secret::new("two"),
        )
        .expect("write");
        assert_eq!(read(Password::Kept).as_deref(), Some("one"));
        // A load sets the kept one aside; the next commit drops it.
        s.password_before_load("pc7", "Administrator")
            .expect("aside");
        assert_eq!(read(Password::Kept), None);
        assert_eq!(read(Password::BeforeLoad).as_deref(), Some("one"));
        s.password_before_load("pc7", "Administrator")
            .expect("again");
        assert_eq!(read(Password::BeforeLoad).as_deref(), Some("one"));
        assert!(s.commit_password("pc7", "Administrator").expect("commit"));
        assert_eq!(read(Password::Kept).as_deref(), Some("two"));
        assert_eq!(read(Password::BeforeLoad), None);
        assert!(
            !s.commit_password("pc7", "Administrator")
                .expect("none pending")
        );
        let mode = std::fs::metadata(s.password_file("pc7", "Administrator"))
            .expect("kept")
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn last_run_keeps_its_strings_on_disk() {
        let mut r = LastRun::default();
        let v: serde_json::Value = serde_json::to_value(&r).expect("json");
        assert_eq!((&v["phase"], &v["result"]), (&"".into(), &"running".into()));
        r.phase = Some(Phase::PostLoad);
        r.result = RunResult::Interrupted;
        let text = serde_json::to_string(&r).expect("json");
        assert!(text.contains(r#""phase":"post-load""#), "{text}");
        assert!(text.contains(r#""result":"interrupted""#), "{text}");
        let back: LastRun = serde_json::from_str(&text).expect("parses");
        assert_eq!((back.phase, back.result), (r.phase, r.result));
        let none: LastRun =
            serde_json::from_str(&serde_json::to_string(&LastRun::default()).expect("json"))
                .expect("parses");
        assert_eq!(none.phase, None);
    }

    #[test]
    fn the_layout_keeps_the_documented_names() {
        // README "Where things go" and reimage.toml(5) name these paths.
        let s = StateDir::new(Path::new("/s"));
        let c = |f: &str| PathBuf::from("/s/computers/pc7").join(f);
        assert_eq!(s.event_log("pc7"), c("events.jsonl"));
        assert_eq!(s.last_run_file("pc7"), c("last-run.json"));
        assert_eq!(
            s.password_file("pc7", "Administrator"),
            c("administrator-password")
        );
        assert_eq!(s.password_file("pc7", "root"), c("root-password"));
        assert_eq!(s.known_hosts(), Path::new("/s/known_hosts"));
        assert_eq!(s.winrm_thumbprint("pc7"), c("winrm-thumbprint"));
    }

    #[test]
    fn second_lock_fails_naming_the_holder() {
        let s = StateDir::new(&tmp("lock"));
        let held = s.lock("pc7").expect("first lock");
        let err = s.lock("pc7").expect_err("second lock must fail");
        assert_eq!(err.code(), 73);
        let pid = format!("pid {}", std::process::id());
        assert!(err.to_string().contains(&pid), "{err}");
        drop(held);
        assert!(s.lock("pc7").is_ok(), "lock is free after drop");
        assert!(!s.lock_held("pc7"));
        let held = s.lock("pc7").expect("lock");
        assert!(s.lock_held("pc7"));
        drop(held);
        assert!(!s.lock_held("pc7") && !s.lock_held("pc8"));
    }

    #[test]
    fn a_holder_that_has_not_written_its_pid_yet_is_still_named() {
        let s = StateDir::new(&tmp("lock-early"));
        let path = s.computer_dir("pc7").join("lock");
        std::fs::create_dir_all(s.computer_dir("pc7")).expect("dir");
        // Another holder took the lock and has not written its pid yet (or
        // is emptying the file on its way out).
        let held = File::create(&path).expect("lock file");
        held.try_lock().expect("first lock");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            (&held)
                .write_all(std::process::id().to_string().as_bytes())
                .expect("write pid");
            held
        });
        let err = s.lock("pc7").expect_err("held");
        let pid = format!("pid {}", std::process::id());
        assert!(err.to_string().contains(&pid), "{err}");
        drop(writer.join());
    }

    #[test]
    fn slots_count() {
        let s = StateDir::new(&tmp("slots"));
        let a = s.acquire_slot("x", 2, Duration::ZERO, |_| {}).expect("ok");
        let b = s.acquire_slot("x", 2, Duration::ZERO, |_| {}).expect("ok");
        assert!(a.is_some() && b.is_some());
        let c = s
            .acquire_slot("x", 2, Duration::from_millis(50), |_| {})
            .expect("ok");
        assert!(c.is_none(), "a third slot must not be handed out");
        drop(a);
        assert!(
            s.acquire_slot("x", 2, Duration::ZERO, |_| {})
                .expect("ok")
                .is_some()
        );
    }

    #[test]
    fn held_slots_show_their_labels_and_free_ones_do_not() {
        let d = tmp("slot-labels");
        let s = StateDir::new(&d);
        assert!(s.slot_labels("y").is_empty());
        let a = s.acquire_slot("y", 3, Duration::ZERO, |_| {}).expect("ok");
        let b = s.acquire_slot("y", 3, Duration::ZERO, |_| {}).expect("ok");
        let (a, b) = (a.expect("slot a"), b.expect("slot b"));
        a.label("node7");
        b.label("node8");
        assert_eq!(s.slot_labels("y"), vec!["node7", "node8"]);
        drop(a);
        assert_eq!(s.slot_labels("y"), vec!["node8"]);
        drop(b);
        let _ = std::fs::remove_dir_all(&d);
    }
}
