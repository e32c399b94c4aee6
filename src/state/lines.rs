//! Lines of an event log, read with bounded memory: a line longer than the
//! cap is skipped (and said to be), never held, so a log without newlines
//! (or one that is `/dev/zero` in disguise) costs a buffer, not the
//! machine.

use std::io::Read;

/// The most bytes one event line may have. An event holds at most 64 KiB of
/// each output stream and 16 KiB of message, which JSON escaping can
/// blow up six-fold: a longer line is not one reimage wrote.
pub const LINE_CAP: usize = 1 << 20;

/// How much of an event log `reimage log` reads: its last `LOG_READ_CAP`
/// bytes; what comes before is left out, and said to be. Each run's start
/// trims the log to `[logs] max_bytes` of finished runs (8 MiB by default)
/// plus the run in progress, so only a log reimage did not trim, or a
/// `max_bytes` set above this, is ever cut.
pub const LOG_READ_CAP: u64 = 64 << 20;

/// Bytes read from the file at a time.
const CHUNK: usize = 64 * 1024;

/// One line as [`Lines::next_line`] gives it.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A whole line at offset `at` (without its newline).
    Whole {
        /// Its offset in the file.
        at: u64,
        /// Its bytes, without the newline.
        text: &'a [u8],
    },
    /// A line longer than the cap, skipped: its offset and its length with
    /// the newline.
    TooLong {
        /// Its offset in the file.
        at: u64,
        /// Its length, newline included.
        len: u64,
    },
}

/// What the loop in [`Lines::next_line`] found, as positions (the line
/// is borrowed from the buffer only once the loop is done).
enum Found {
    Whole(usize, usize, u64),
    TooLong(u64, u64),
    End,
}

/// The lines of `R` from offset `start` on.
pub struct Lines<R> {
    r: R,
    cap: usize,
    buf: Vec<u8>,
    /// Where in `buf` the next line starts.
    pos: usize,
    /// How far from `pos` on `buf` holds no newline (searched already).
    searched: usize,
    /// The file offset of `buf[0]`.
    base: u64,
    /// A line longer than the cap is being skipped: where it began.
    skipping: Option<u64>,
}

impl<R: Read> Lines<R> {
    /// Lines of `r`, whose next byte is at file offset `start`, each at
    /// most `cap` bytes.
    pub fn new(r: R, start: u64, cap: usize) -> Lines<R> {
        Lines {
            r,
            cap,
            buf: Vec::new(),
            pos: 0,
            searched: 0,
            base: start,
            skipping: None,
        }
    }

    /// The next whole line, `None` at the end of what can be read now (a
    /// last line without its newline stays pending: a writer may be in the
    /// middle of it, and a later call sees it once it is whole).
    pub fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        let found = loop {
            let from = self.pos + self.searched;
            if let Some(i) = self.buf[from..].iter().position(|&b| b == b'\n') {
                let (start, end) = (self.pos, from + i);
                self.pos = end + 1;
                self.searched = 0;
                let at = self.base + start as u64;
                if let Some(from) = self.skipping.take() {
                    break Found::TooLong(from, at + (end - start) as u64 + 1 - from);
                }
                break Found::Whole(start, end, at);
            }
            // No newline in what is left: keep only that, and read more.
            self.base += self.pos as u64;
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.searched = self.buf.len();
            if self.buf.len() > self.cap {
                self.skipping.get_or_insert(self.base);
                self.base += self.buf.len() as u64;
                self.buf.clear();
                self.searched = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + CHUNK, 0);
            let n = loop {
                match self.r.read(&mut self.buf[have..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            self.buf.truncate(have + n.as_ref().copied().unwrap_or(0));
            if n? == 0 {
                break Found::End;
            }
        };
        Ok(match found {
            Found::Whole(s, e, at) => Some(Line::Whole {
                at,
                text: &self.buf[s..e],
            }),
            Found::TooLong(at, len) => Some(Line::TooLong { at, len }),
            Found::End => None,
        })
    }

    /// The bytes after the last whole line (a line without its newline
    /// yet, or being skipped).
    pub fn pending(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
            + self
                .skipping
                .map_or(0, |from| self.base.saturating_sub(from))
    }

    /// The file offset after the last whole line.
    pub fn offset(&self) -> u64 {
        self.skipping.unwrap_or(self.base + self.pos as u64)
    }
}

/// Where to start reading a file of `len` bytes so that at most `cap`
/// bytes are read: 0, or a later offset (the reader then skips to the first
/// whole line with [`skip_partial`]).
pub fn window(len: u64, cap: u64) -> u64 {
    len.saturating_sub(cap)
}

/// Skips the rest of the line that `lines` starts in the middle of (after
/// a [`window`] that did not start at 0): the bytes up to and including
/// the first newline. Returns how many were skipped.
pub fn skip_partial<R: Read>(lines: &mut Lines<R>) -> std::io::Result<u64> {
    let from = lines.offset();
    match lines.next_line()? {
        Some(Line::Whole { at, text }) => Ok(at + text.len() as u64 + 1 - from),
        Some(Line::TooLong { at, len }) => Ok(at + len - from),
        None => Ok(lines.pending()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], cap: usize) -> (Vec<String>, u64) {
        let mut l = Lines::new(input, 0, cap);
        let mut out = Vec::new();
        while let Some(line) = l.next_line().expect("read") {
            out.push(match line {
                Line::Whole { at, text } => format!("{at}:{}", String::from_utf8_lossy(text)),
                Line::TooLong { at, len } => format!("{at}:long {len}"),
            });
        }
        (out, l.pending())
    }

    #[test]
    fn whole_lines_with_their_offsets_and_a_pending_tail() {
        assert_eq!(
            all(b"ab\n\ncd\nef", 10),
            (vec!["0:ab".into(), "3:".into(), "4:cd".into()], 2)
        );
    }

    #[test]
    fn a_line_over_the_cap_is_skipped_not_held() {
        let mut input = b"ok\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * CHUNK));
        input.extend(b"\nnext\n");
        let (lines, pending) = all(&input, 1000);
        let long = 3 * CHUNK as u64 + 1;
        assert_eq!(
            lines,
            vec![
                "0:ok".to_string(),
                format!("3:long {long}"),
                format!("{}:next", 3 + long)
            ]
        );
        assert_eq!(pending, 0);
    }

    #[test]
    fn an_endless_line_costs_a_buffer() {
        // /dev/zero, as much as a test reads: 64 MiB of one line.
        let zero = std::io::repeat(0).take(64 << 20);
        let mut l = Lines::new(zero, 0, LINE_CAP);
        assert_eq!(l.next_line().expect("read"), None);
        assert_eq!(l.pending(), 64 << 20);
        // Vec's growth doubles: at most twice a line and a chunk.
        assert!(
            l.buf.capacity() <= 2 * (LINE_CAP + CHUNK),
            "{}",
            l.buf.capacity()
        );
    }

    #[test]
    fn a_window_starts_at_the_next_whole_line() {
        let input = b"first line\nsecond\nthird\n";
        let from = window(input.len() as u64, 16);
        assert_eq!(from, 8);
        let mut l = Lines::new(&input[from as usize..], from, 100);
        assert_eq!(
            skip_partial(&mut l).expect("skip"),
            3,
            "the rest of `first line`"
        );
        assert_eq!(
            l.next_line().expect("read"),
            Some(Line::Whole {
                at: 11,
                text: b"second"
            })
        );
        assert_eq!(window(10, 16), 0);
    }
}
