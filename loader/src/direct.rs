//! Files written and read around the OS page cache (`O_DIRECT`): the full load's sort
//! runs, and its input files ([`drop_cached`] gives back what of those was cached).
//!
//! Sort runs are written once, read once and deleted, and an input is read once per load;
//! caching them only costs. On the
//! machines this was measured on, a buffered write of 3 GB took 8.3 s of kernel CPU
//! (copying into and allocating page-cache pages) where the same write with `O_DIRECT`
//! took 0.2 s, and at 10 M certificates the runs' buffered writes were a quarter of the
//! load's CPU. Direct I/O needs aligned buffers, offsets and lengths: the writer writes
//! whole aligned blocks, zero-pads the last one and then truncates the file to its real
//! length; the reader reads aligned blocks and serves the requested byte range out of
//! them. Where the file system refuses `O_DIRECT` (tmpfs, some network file systems) both
//! fall back to ordinary I/O with the same code.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Alignment of buffers, offsets and lengths for direct I/O (the largest logical block
/// size in common use).
const ALIGN: usize = 4096;

/// A zeroed buffer of `len` bytes (a multiple of [`ALIGN`]) starting at an aligned
/// address: a slice of an over-allocated `Vec`, so no unsafe code is needed.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let len = len.next_multiple_of(ALIGN).max(ALIGN);
        let storage = vec![0u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        AlignedBuf { storage, start, len }
    }

    fn get(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn open_direct(path: &Path, write: bool, direct: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    if write {
        o.write(true).create(true).truncate(true);
    } else {
        o.read(true);
    }
    #[cfg(target_os = "linux")]
    if direct {
        let mut d = o.clone();
        d.custom_flags(libc::O_DIRECT);
        match d.open(path) {
            Ok(f) => return Ok(f),
            // The file system does not do direct I/O: use the page cache.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = direct;
    o.open(path)
}

/// Asks the kernel to drop the cached pages of the regular file at `path` (advice only:
/// errors are ignored, and pages another process has mapped stay). Anything but a
/// regular file is left alone, before it is opened: opening a named pipe would wait for a
/// writer.
pub(crate) fn drop_cached(path: &Path) {
    #[cfg(target_os = "linux")]
    if std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && let Ok(f) = File::open(path)
    {
        use std::os::fd::AsRawFd;
        // SAFETY: an advice call on a descriptor this function holds open; it touches no
        // memory of this process.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
}

/// Writes a file sequentially in aligned blocks.
pub(crate) struct DirectWriter {
    file: File,
    buf: AlignedBuf,
    /// Bytes in `buf`.
    filled: usize,
    /// Bytes of the file written before `buf`.
    flushed: u64,
}

impl DirectWriter {
    /// Creates (truncates) `path`; `buffer` bytes are gathered per write.
    pub(crate) fn create(path: &Path, buffer: usize) -> io::Result<DirectWriter> {
        DirectWriter::create_with(path, buffer, true)
    }

    fn create_with(path: &Path, buffer: usize, direct: bool) -> io::Result<DirectWriter> {
        Ok(DirectWriter { file: open_direct(path, true, direct)?, buf: AlignedBuf::new(buffer), filled: 0, flushed: 0 })
    }

    /// Bytes written so far (the file's length once finished).
    pub(crate) fn position(&self) -> u64 {
        self.flushed + self.filled as u64
    }

    /// Appends `data`.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = self.buf.len - self.filled;
            let n = room.min(data.len());
            self.buf.get_mut()[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == self.buf.len {
                self.file.write_all_at(self.buf.get(), self.flushed)?;
                self.flushed += self.buf.len as u64;
                self.filled = 0;
            }
        }
        Ok(())
    }

    /// Writes what is buffered (zero-padded to a whole block) and cuts the file to the
    /// bytes actually written.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        let len = self.position();
        if self.filled > 0 {
            let padded = self.filled.next_multiple_of(ALIGN);
            self.buf.get_mut()[self.filled..padded].fill(0);
            self.file.write_all_at(&self.buf.get()[..padded], self.flushed)?;
            self.file.set_len(len)?;
        }
        Ok(len)
    }
}

/// Threads that read blocks ahead for [`DirectReader`]s, so that a reader's next block
/// is (usually) in memory when it needs it: direct reads bypass the kernel's readahead,
/// and a merge that waited for each of its reads spent a third of its time waiting. The
/// threads end when the last handle (and every reader holding one) is dropped.
#[derive(Clone)]
pub(crate) struct ReadAhead {
    jobs: crossbeam_channel::Sender<Job>,
}

/// One block to read.
struct Job {
    file: Arc<File>,
    buf: AlignedBuf,
    at: u64,
    want: usize,
    reply: crossbeam_channel::Sender<(AlignedBuf, io::Result<usize>)>,
}

impl ReadAhead {
    /// Starts `threads` reading threads.
    pub(crate) fn new(threads: usize) -> ReadAhead {
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::spawn(move || {
                for mut job in rx {
                    let r = read_block(&job.file, &mut job.buf, job.at, job.want);
                    // The reader may have been dropped meanwhile; then nobody needs it.
                    let _ = job.reply.send((job.buf, r));
                }
            });
        }
        ReadAhead { jobs }
    }
}

/// Reads up to `want` bytes at `at` (aligned) into `buf`: whole blocks, as direct I/O
/// requires; whatever lies past `want` is ignored. Returns the bytes that count.
fn read_block(file: &File, buf: &mut AlignedBuf, at: u64, want: usize) -> io::Result<usize> {
    let ask = want.next_multiple_of(ALIGN);
    let mut got = 0;
    while got < ask {
        match file.read_at(&mut buf.get_mut()[got..ask], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got.min(want))
}

/// Reads one byte range of a file sequentially, in aligned blocks, the next block read
/// ahead when a [`ReadAhead`] is given.
pub(crate) struct DirectReader {
    file: Arc<File>,
    buf: AlignedBuf,
    /// File offset of `buf[0]`.
    at: u64,
    /// Valid bytes of `buf` are `pos..end`.
    pos: usize,
    end: usize,
    /// File offset where the range ends.
    limit: u64,
    /// The next block (at `at + buf.len`), being read.
    ahead: Option<crossbeam_channel::Receiver<(AlignedBuf, io::Result<usize>)>>,
    /// A buffer for the next read ahead.
    spare: Option<AlignedBuf>,
    pool: Option<ReadAhead>,
}

impl DirectReader {
    /// Reads `from..to` of `path` (`to` past the end of the file means to its end), in
    /// reads of `buffer` bytes, ahead on `pool`'s threads when given.
    pub(crate) fn open(
        path: &Path,
        from: u64,
        to: u64,
        buffer: usize,
        pool: Option<&ReadAhead>,
    ) -> io::Result<DirectReader> {
        DirectReader::open_with(path, from, to, buffer, true, pool)
    }

    fn open_with(
        path: &Path,
        from: u64,
        to: u64,
        buffer: usize,
        direct: bool,
        pool: Option<&ReadAhead>,
    ) -> io::Result<DirectReader> {
        let file = Arc::new(open_direct(path, false, direct)?);
        let aligned = from - from % ALIGN as u64;
        let mut r = DirectReader {
            file,
            buf: AlignedBuf::new(buffer),
            at: aligned,
            pos: 0,
            end: 0,
            limit: to.max(from),
            ahead: None,
            spare: pool.map(|_| AlignedBuf::new(buffer)),
            pool: pool.cloned(),
        };
        let want = r.want(r.at);
        r.end = read_block(&r.file, &mut r.buf, r.at, want)?;
        r.pos = ((from - aligned) as usize).min(r.end);
        r.read_ahead();
        Ok(r)
    }

    /// Bytes of the range in the block at `at`.
    fn want(&self, at: u64) -> usize {
        self.buf.len.min(usize::try_from(self.limit.saturating_sub(at)).unwrap_or(usize::MAX))
    }

    /// Starts reading the block after the current one, if the range goes on.
    fn read_ahead(&mut self) {
        let next = self.at + self.buf.len as u64;
        if next >= self.limit || self.end < self.buf.len {
            return;
        }
        if let (Some(pool), Some(buf)) = (&self.pool, self.spare.take()) {
            let (reply, rx) = crossbeam_channel::bounded(1);
            let job = Job { file: self.file.clone(), buf, at: next, want: self.want(next), reply };
            if pool.jobs.send(job).is_ok() {
                self.ahead = Some(rx);
            }
        }
    }

    /// Moves to the next block: the one read ahead, or read now.
    fn advance(&mut self) -> io::Result<()> {
        self.at += self.buf.len as u64;
        self.pos = 0;
        match self.ahead.take().and_then(|rx| rx.recv().ok()) {
            Some((buf, result)) => {
                self.spare = Some(std::mem::replace(&mut self.buf, buf));
                self.end = result?;
            }
            None => {
                let want = self.want(self.at);
                self.end = read_block(&self.file, &mut self.buf, self.at, want)?;
            }
        }
        self.read_ahead();
        Ok(())
    }
}

impl Read for DirectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.end {
            // A short block is the end of the file or of the range.
            if self.end < self.buf.len || self.at + self.buf.len as u64 >= self.limit {
                return Ok(0);
            }
            self.advance()?;
            if self.end == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf.get()[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn round_trips_any_length_and_range_both_ways() {
        // Also on tmpfs, where opening with O_DIRECT fails and ordinary I/O takes over.
        let shm = std::path::Path::new("/dev/shm");
        let dirs =
            [Some(tempfile::tempdir().expect("tmp")), shm.is_dir().then(|| tempfile::tempdir_in(shm).ok()).flatten()];
        for dir in dirs.iter().flatten() {
            round_trips_in(dir.path());
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_failed_write_is_reported() {
        // /dev/full refuses every write with ENOSPC: a spill onto a full disk must fail the
        // load, never leave a short run behind a success.
        let mut w = DirectWriter::create_with(Path::new("/dev/full"), 8192, false).expect("open /dev/full");
        let data = pattern(8192);
        let mut failed = None;
        for _ in 0..4 {
            if let Err(e) = w.write(&data) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => w.finish().expect_err("a write to /dev/full succeeded"),
        };
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    }

    fn round_trips_in(dir: &Path) {
        let pool = ReadAhead::new(2);
        for direct in [true, false] {
            for len in [0, 1, 4095, 4096, 4097, 3 * 8192 + 17, 100_000] {
                let path = dir.join(format!("f-{direct}-{len}"));
                let data = pattern(len);
                let mut w = DirectWriter::create_with(&path, 8192, direct).expect("create");
                // Uneven pieces, so writes straddle the buffer.
                for piece in data.chunks(1000) {
                    w.write(piece).expect("write");
                }
                assert_eq!(w.position(), len as u64);
                assert_eq!(w.finish().expect("finish"), len as u64);
                assert_eq!(std::fs::read(&path).expect("read back"), data, "len {len}");
                let ranges = [(0, len), (0, u64::MAX as usize), (1, len), (len / 3, len / 2), (4095, 8193), (len, len)];
                for ((from, to), pool) in ranges.into_iter().flat_map(|r| [(r, None), (r, Some(&pool))]) {
                    let from = from.min(len);
                    let mut r =
                        DirectReader::open_with(&path, from as u64, to as u64, 8192, direct, pool).expect("open");
                    let mut got = Vec::new();
                    r.read_to_end(&mut got).expect("read");
                    let want = &data[from..to.min(len).max(from)];
                    assert_eq!(got, want, "len {len} range {from}..{to} direct {direct} ahead {}", pool.is_some());
                }
            }
        }
    }
}
