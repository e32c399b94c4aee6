//! The state directory: per-computer lock (flock), last-run record, event
//! log, boot id before a load, and counting semaphores shared by reimage
//! processes. Every write is atomic (temp file, fsync, rename).

use anyhow::{Context, Result};

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
}

impl From<anyhow::Error> for LockError {
    fn from(e: anyhow::Error) -> LockError {
        LockError::Io(e)
    }
}

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
        let _ = self.file.set_len(0);
        // SAFETY: plain syscall on an fd we own.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

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
#[serde(rename_all = "kebab-case")]
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
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(p: &Option<Phase>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => p.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Phase>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        Phase::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&s)).map(Some)
    }
}

fn flock(f: &File, how: i32) -> bool {
    // SAFETY: plain syscall on an fd we own.
    unsafe { libc::flock(f.as_raw_fd(), how) == 0 }
}

impl StateDir {
    /// The state directory at `root` (created on first use).
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    /// The directory of one computer.
    pub fn computer_dir(&self, computer: &str) -> PathBuf {
        self.root.join("computers").join(computer)
    }

    /// The computer's append-only event log.
    pub fn event_log(&self, computer: &str) -> PathBuf {
        self.computer_dir(computer).join("events.jsonl")
    }

    fn ensure(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| {
            format!("cannot create state directory {} (set --state-dir or state_dir to a writable place)", dir.display())
        })
    }

    /// Takes the computer's lock at once, or fails with
    /// [`Error::Locked`] naming the holder (exit 73).
    pub fn lock(&self, computer: &str) -> Result<Lock, Error> {
        self.try_lock(computer).map_err(|e| match e {
            LockError::Held(l) => Error::Locked(l.to_string()),
            LockError::Io(e) => Error::Fatal(e),
        })
    }

    fn try_lock(&self, computer: &str) -> Result<Lock, LockError> {
        let dir = self.computer_dir(computer);
        self.ensure(&dir)?;
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        if !flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            let mut s = String::new();
            let _ = file.read_to_string(&mut s);
            return Err(LockError::Held(Locked {
                computer: computer.into(),
                pid: s.trim().parse().ok(),
            }));
        }
        let mark = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{}", std::process::id())?;
            file.flush()
        };
        mark(&mut file).with_context(|| format!("cannot write lock file {}", path.display()))?;
        Ok(Lock { file })
    }

    /// Records the last run (atomically).
    pub fn write_last_run(&self, computer: &str, r: &LastRun) -> Result<()> {
        let dir = self.computer_dir(computer);
        self.ensure(&dir)?;
        let text = serde_json::to_vec_pretty(r)?;
        write_atomic(&dir.join("last-run.json"), &text)
    }

    fn preload_path(&self, computer: &str) -> PathBuf {
        self.computer_dir(computer).join("preload.json")
    }

    /// Records a verified preload (atomically).
    pub fn write_preload(&self, computer: &str, p: &Preload) -> Result<()> {
        let dir = self.computer_dir(computer);
        self.ensure(&dir)?;
        write_atomic(&self.preload_path(computer), &serde_json::to_vec_pretty(p)?)
    }

    /// The preload record, if there is one (for `check`); a record that
    /// cannot be read is none.
    pub fn read_preload(&self, computer: &str) -> Option<Preload> {
        let text = std::fs::read(self.preload_path(computer)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Takes the preload record away: called by every run when it starts,
    /// under the computer's lock, so a record is used at most once. Err
    /// when a record exists but cannot be removed: then nothing may be
    /// reused, and the caller says so.
    pub fn take_preload(&self, computer: &str) -> Result<Option<Preload>> {
        let path = self.preload_path(computer);
        let p = self.read_preload(computer);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "cannot remove the preload record {}",
                path.display()
            ))),
        }
    }

    /// Remembers the computer's boot id seen before a load (or forgets it).
    pub fn write_boot_id(&self, computer: &str, id: Option<&str>) -> Result<()> {
        let dir = self.computer_dir(computer);
        self.ensure(&dir)?;
        let path = dir.join("boot-id-before-load");
        match id {
            Some(id) => write_atomic(&path, id.as_bytes()),
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
        }
    }

    /// The boot id seen before the last load, if one was seen.
    pub fn read_boot_id(&self, computer: &str) -> Option<String> {
        let s = std::fs::read_to_string(self.computer_dir(computer).join("boot-id-before-load"))
            .ok()?;
        let s = s.trim().to_string();
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
        let dir = self.root.join("slots").join(name);
        self.ensure(&dir)?;
        // Opened once; each poll only tries the locks.
        let mut files = (0..max.max(1))
            .map(|i| {
                let path = dir.join(format!("slot-{i}"));
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .with_context(|| format!("cannot open slot file {}", path.display()))
            })
            .collect::<Result<Vec<File>>>()?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(i) = files
                .iter()
                .position(|f| flock(f, libc::LOCK_EX | libc::LOCK_NB))
            {
                let file = files.swap_remove(i);
                let _ = file.set_len(0);
                let _ = (&file).write_all(std::process::id().to_string().as_bytes());
                return Ok(Some(Slot {
                    _file: file,
                    index: i as u32,
                }));
            }
            crate::signal::check()?;
            if start.elapsed() >= wait {
                return Ok(None);
            }
            waiting(start.elapsed());
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// A held semaphore slot; freed when dropped or when the process dies.
#[derive(Debug)]
pub struct Slot {
    _file: File,
    /// Which slot.
    pub index: u32,
}

/// Writes `data` to `path` atomically: a temp file in the same directory
/// (created if missing), fsync, rename, fsync of the directory. A reader
/// sees the old or the new file, never half of one; a failed write leaves
/// no temp file behind.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
    fn second_lock_fails_naming_the_holder() {
        let s = StateDir::new(&tmp("lock"));
        let held = s.lock("pc7").expect("first lock");
        let err = s.lock("pc7").expect_err("second lock must fail");
        assert_eq!(err.code(), 73);
        let pid = format!("pid {}", std::process::id());
        assert!(err.to_string().contains(&pid), "{err}");
        drop(held);
        assert!(s.lock("pc7").is_ok(), "lock is free after drop");
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
}
