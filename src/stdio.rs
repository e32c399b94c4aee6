//! reimage's own stdout and stderr, written so that a reader that stops
//! reading (a full pipe nobody drains, a terminal stopped with Ctrl-S)
//! never blocks the run: each stream has a thread of its own that does the
//! writing, and the run only queues. The queue holds at most
//! [`MAX_PENDING`] bytes; what does not fit is dropped and counted, and the
//! run's end tells the event log how much (see [`Stream::lost`]).
//!
//! Where the thread cannot be started (the host is out of processes), a
//! line is written directly, as before.
//!
//! The views (`status`, `log`, `check`) hold no lock and write what their
//! reader asked for (`reimage log --all | less`): after [`patient`], a
//! full queue makes the writer wait for the reader instead of dropping,
//! and the exit waits until everything is written; either wait ends when
//! a signal comes.
//!
//! A write that fails ends the stream: what follows is discarded, and
//! [`Stream::failure`] says why (the views turn a failure other than a
//! reader that went away into exit 1; a run ignores it).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The most bytes a stream holds that its reader has not taken yet.
pub const MAX_PENDING: usize = 1 << 20;

/// How long the run's end and the process's exit wait, each, for a stream
/// to take what is queued.
pub const DRAIN: Duration = Duration::from_secs(1);

/// Which of reimage's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fd {
    Out,
    Err,
}

/// One output stream and its writer thread.
pub struct Stream {
    fd: Fd,
    queue: Mutex<Queue>,
    /// Signalled when something is queued, and when the queue ran empty.
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    /// The bytes of the write the writer is in now (0: none).
    busy: usize,
    writer: Writer,
    /// Lines (or pieces of a redraw) dropped, and their bytes.
    dropped: u64,
    dropped_bytes: u64,
    /// The write that failed: nothing is written after it.
    failed: Option<std::io::Error>,
}

#[derive(Default, PartialEq, Eq)]
enum Writer {
    #[default]
    NotStarted,
    Running,
    /// No thread could be started: write directly.
    Direct,
}

/// Wait for the reader rather than drop (see [`patient`]).
static PATIENT: AtomicBool = AtomicBool::new(false);

/// From now on, a full queue waits for its reader (until a signal comes)
/// instead of dropping, and the exit waits until the streams took
/// everything: for the views, which hold nothing another run waits for.
pub fn patient() {
    PATIENT.store(true, Ordering::Relaxed);
}

/// reimage's stdout.
pub static STDOUT: Stream = Stream::new(Fd::Out);
/// reimage's stderr.
pub static STDERR: Stream = Stream::new(Fd::Err);

/// What a stream could not write: dropped (did not fit while its reader
/// did not read) and still queued.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Pieces dropped and their bytes.
    pub dropped: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
    /// Bytes still waiting for the reader.
    pub pending_bytes: u64,
}

impl Lost {
    /// Nothing was lost.
    pub fn none(&self) -> bool {
        self.dropped == 0 && self.pending_bytes == 0
    }
}

impl Stream {
    const fn new(fd: Fd) -> Stream {
        Stream {
            fd,
            queue: Mutex::new(Queue {
                chunks: VecDeque::new(),
                bytes: 0,
                busy: 0,
                writer: Writer::NotStarted,
                dropped: 0,
                dropped_bytes: 0,
                failed: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `data` (a line with its newline, or a piece of a redraw);
    /// dropped and counted when it does not fit.
    pub fn write(&'static self, data: Vec<u8>) {
        let mut q = self.lock();
        if q.writer == Writer::NotStarted {
            q.writer = match std::thread::Builder::new()
                .name(format!("{:?}-writer", self.fd).to_lowercase())
                .spawn(move || self.drain())
            {
                Ok(_) => Writer::Running,
                Err(_) => Writer::Direct,
            };
        }
        if q.failed.is_some() {
            return;
        }
        if q.writer == Writer::Direct {
            drop(q);
            let r = self.put(&data);
            self.note(r);
            return;
        }
        let patient = PATIENT.load(Ordering::Relaxed);
        while patient
            && q.failed.is_none()
            && q.bytes > 0
            && q.bytes + data.len() > MAX_PENDING
            && crate::signal::caught().is_none()
        {
            q = self
                .changed
                .wait_timeout(q, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        // Patient, one write larger than the bound goes when the queue
        // is empty.
        if q.failed.is_some() {
            return;
        }
        if q.bytes + data.len() > MAX_PENDING && !(patient && q.bytes == 0) {
            q.dropped += 1;
            q.dropped_bytes += data.len() as u64;
            return;
        }
        q.bytes += data.len();
        q.chunks.push_back(data);
        self.changed.notify_all();
    }

    /// Queues `data` unless the stream is behind: for what the next redraw
    /// replaces anyway (a spinner), never counted as lost.
    pub fn write_ephemeral(&'static self, data: Vec<u8>) {
        {
            let q = self.lock();
            if q.busy > 0 || !q.chunks.is_empty() {
                return;
            }
        }
        self.write(data);
    }

    /// The writer thread: takes the queue in order, one write at a time
    /// (blocking as long as the reader does not read).
    fn drain(&self) {
        loop {
            let chunk = {
                let mut q = self.lock();
                q.busy = 0;
                self.changed.notify_all();
                loop {
                    if let Some(c) = q.chunks.pop_front() {
                        q.bytes -= c.len();
                        q.busy = c.len();
                        break c;
                    }
                    q = self.changed.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let r = self.put(&chunk);
            self.note(r);
        }
    }

    /// Writes `data` to the stream.
    fn put(&self, data: &[u8]) -> std::io::Result<()> {
        match self.fd {
            Fd::Out => {
                let mut o = std::io::stdout().lock();
                o.write_all(data).and_then(|_| o.flush())
            }
            Fd::Err => std::io::stderr().lock().write_all(data),
        }
    }

    /// Keeps the first failed write: the stream ends there.
    fn note(&self, r: std::io::Result<()>) {
        if let Err(e) = r {
            let mut q = self.lock();
            if q.failed.is_none() {
                q.failed = Some(e);
            }
            // Nothing queued will be written.
            q.chunks.clear();
            q.bytes = 0;
            self.changed.notify_all();
        }
    }

    /// Why the stream ended: the write that failed (`BrokenPipe`: its
    /// reader went away), as its kind and its message; None while writes
    /// go through.
    pub fn failure(&self) -> Option<(std::io::ErrorKind, String)> {
        self.lock()
            .failed
            .as_ref()
            .map(|e| (e.kind(), e.to_string()))
    }

    /// Waits until the reader took everything queued, at most `limit`, and
    /// less when a signal arrives meanwhile (one that came before does not
    /// shorten it: an interrupted run still gets its last lines out).
    /// True when the stream is drained, or ended by a failed write.
    pub fn drain_for(&self, limit: Duration) -> bool {
        self.drain_within(limit, crate::signal::caught().is_some())
    }

    /// Waits until the reader took everything queued, or until a signal
    /// came (also one that came before): the views' wait for their
    /// reader. True when the stream is drained, or ended by a failed write.
    pub fn drain_until_signal(&self) -> bool {
        self.drain_within(Duration::MAX, false)
    }

    /// [`Stream::drain_for`]; `signalled`: a signal already caught does
    /// not end the wait.
    fn drain_within(&self, limit: Duration, signalled: bool) -> bool {
        let start = Instant::now();
        let mut q = self.lock();
        loop {
            if (q.chunks.is_empty() && q.busy == 0) || q.failed.is_some() {
                return true;
            }
            let waited = start.elapsed();
            if waited >= limit || (!signalled && crate::signal::caught().is_some()) {
                return false;
            }
            // Short slices: a signal is seen within 50 ms.
            let slice = (limit - waited).min(Duration::from_millis(50));
            q = self
                .changed
                .wait_timeout(q, slice)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// What this stream dropped so far and what still waits.
    pub fn lost(&self) -> Lost {
        let q = self.lock();
        Lost {
            dropped: q.dropped,
            dropped_bytes: q.dropped_bytes,
            pending_bytes: (q.bytes + q.busy) as u64,
        }
    }

    /// The stream's name for messages.
    pub fn name(&self) -> &'static str {
        match self.fd {
            Fd::Out => "stdout",
            Fd::Err => "stderr",
        }
    }
}

/// Waits (each at most [`DRAIN`]; after [`patient`], until a signal comes)
/// for both streams to take what is queued: called once as the process
/// exits.
pub fn drain_all() {
    if PATIENT.load(Ordering::Relaxed) {
        STDOUT.drain_until_signal();
        STDERR.drain_until_signal();
        return;
    }
    STDOUT.drain_for(DRAIN);
    STDERR.drain_for(DRAIN);
}

/// A terminal for indicatif's spinner that writes through [`STDERR`]: the
/// spinner's redraws are dropped while the terminal does not take them.
/// Everything indicatif writes is such a redraw, also the lines of its
/// `println`: a line to keep goes through [`STDERR`] inside
/// `ProgressBar::suspend` instead.
///
/// One redraw (a clear of the old line, the new text, the spaces that
/// blank the rest of the row) is gathered and queued at indicatif's
/// `flush` as one piece, so it reaches the terminal whole or not at all:
/// a clear dropped while the text that follows got through would leave
/// the old text on the line.
#[derive(Debug, Default)]
pub struct Term {
    redraw: Mutex<Vec<u8>>,
}

impl Term {
    /// A terminal with nothing gathered yet.
    pub fn new() -> Term {
        Term::default()
    }

    fn add(&self, data: &[u8]) -> std::io::Result<()> {
        self.redraw
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(())
    }

    fn cursor(&self, n: usize, dir: char) -> std::io::Result<()> {
        if n > 0 {
            self.add(format!("\x1b[{n}{dir}").as_bytes())?;
        }
        Ok(())
    }

    /// Takes what was gathered since the last flush.
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.redraw.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl indicatif::TermLike for Term {
    fn width(&self) -> u16 {
        rustix::termios::tcgetwinsize(std::io::stderr())
            .ok()
            .map(|w| w.ws_col)
            .filter(|&c| c > 0)
            .unwrap_or(80)
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'D')
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.add(format!("{s}\n").as_bytes())
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.add(s.as_bytes())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.add(b"\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        let redraw = self.take();
        if !redraw.is_empty() {
            STDERR.write_ephemeral(redraw);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts() {
        static S: Stream = Stream::new(Fd::Err);
        // No writer: as if its reader never read.
        S.lock().writer = Writer::Running;
        S.write(vec![b'x'; MAX_PENDING - 10]);
        S.write(vec![b'y'; 10]);
        S.write(vec![b'z'; 11]);
        S.write_ephemeral(b"spin".to_vec());
        let lost = S.lost();
        assert_eq!((lost.dropped, lost.dropped_bytes), (1, 11));
        assert_eq!(lost.pending_bytes, MAX_PENDING as u64);
        let t = Instant::now();
        assert!(!S.drain_for(Duration::from_millis(100)));
        assert!(t.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn a_redraw_is_gathered_until_flush() {
        use indicatif::TermLike;
        let t = Term::new();
        t.clear_line().expect("clear");
        t.write_str("[1/2] pc7").expect("text");
        t.move_cursor_up(0).expect("no move");
        t.write_str("  ").expect("filler");
        assert_eq!(t.take(), b"\r\x1b[2K[1/2] pc7  ");
        assert!(t.take().is_empty());
    }
}
