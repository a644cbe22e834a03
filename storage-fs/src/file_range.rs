//! Streams a byte range of an open file: the bytes a blob download or an upload read-back
//! sends.
//!
//! Why not `tokio::fs::File` behind a `ReaderStream`, as before: that sends every read to
//! the blocking pool, reads into the file's own buffer and then copies it into the stream's
//! buffer; the thread switches and the copy were a fifth of the server's CPU in a pull
//! profile (docs/performance.md, round 5).
//!
//! Here each chunk is read first with `preadv2(RWF_NOWAIT)` right on the async thread:
//! Linux then copies only what is already in the page cache and never waits for the disk
//! (`EAGAIN` instead), so the async thread spends about what the copy costs and never
//! blocks on I/O. Only what must come from the disk goes to the blocking pool. Either way
//! the bytes land straight in the buffer the HTTP body sends.
//!
//! Each download recycles its buffers: a chunk's memory goes back to the download's pool
//! when the body drops the chunk, and the next read reuses it. Without that, every chunk
//! was a fresh 256 KiB allocation, which glibc serves with `mmap`: one page fault per 4 KiB
//! read.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use storage_traits::{ByteStream, StorageError};

use crate::error::{blocking, io_error};

/// Size of each read: large enough that a 64 MiB layer is 256 reads, small enough that
/// many concurrent downloads stay cheap (a download holds at most about three chunks: the
/// one the body is sending and up to [`KEEP`] spare).
const CHUNK: usize = 256 * 1024;

/// Spare buffers a download keeps for its next reads.
const KEEP: usize = 2;

/// A stream of `range` of `file` in chunks of at most [`CHUNK`] bytes. The file must hold
/// the whole range: if it turns out shorter (something outside the store truncated it), the
/// stream ends with an error rather than silently sending fewer bytes than promised.
pub(crate) fn stream(file: File, range: Range<u64>, path: PathBuf) -> ByteStream {
    let state = State {
        file: Arc::new(file),
        at: range.start,
        end: range.end,
        pool: Pool::default(),
        nowait: true,
        path,
    };
    stream::try_unfold(state, next_chunk).boxed()
}

struct State {
    file: Arc<File>,
    /// Offset of the next chunk.
    at: u64,
    end: u64,
    pool: Pool,
    /// Whether to try reads from the page cache on the async thread; cleared when the file
    /// system does not support `RWF_NOWAIT`.
    nowait: bool,
    path: PathBuf,
}

async fn next_chunk(mut state: State) -> Result<Option<(Bytes, State)>, StorageError> {
    if state.at >= state.end {
        return Ok(None);
    }
    let len = usize::try_from(state.end - state.at).map_or(CHUNK, |left| left.min(CHUNK));
    let mut buf = state.pool.take(len);
    let cached = match state.nowait {
        true => read_cached(&state.file, &mut buf[..len], state.at),
        false => FromCache::Unsupported,
    };
    let (buf, n) = match cached {
        FromCache::Read(n) => (buf, n),
        FromCache::Failed(e) => return Err(io_error("read", &state.path)(e)),
        FromCache::Miss | FromCache::Unsupported => {
            state.nowait &= !matches!(cached, FromCache::Unsupported);
            let file = state.file.clone();
            let at = state.at;
            let failed = io_error("read", &state.path);
            blocking(move || read_full(&file, buf, len, at).map_err(failed)).await?
        }
    };
    if n == 0 {
        let eof = io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("file ends at {}, before byte {}", state.at, state.end),
        );
        return Err(io_error("read", &state.path)(eof));
    }
    state.at += n as u64;
    let chunk = Bytes::from_owner(Recycled {
        buf,
        len: n,
        pool: Arc::downgrade(&state.pool.0),
    });
    Ok(Some((chunk, state)))
}

/// What a read limited to the page cache got.
enum FromCache {
    /// This many bytes (0 at the end of the file); can be fewer than asked when only part
    /// of the range is cached.
    Read(usize),
    /// Nothing: the first page must come from the disk.
    Miss,
    /// The file system (or the platform) cannot read without waiting.
    Unsupported,
    Failed(io::Error),
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_cached(file: &File, dst: &mut [u8], at: u64) -> FromCache {
    use rustix::io::{Errno, ReadWriteFlags, preadv2};
    match preadv2(
        file,
        &mut [io::IoSliceMut::new(dst)],
        at,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) => FromCache::Read(n),
        Err(Errno::AGAIN | Errno::INTR) => FromCache::Miss,
        Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => FromCache::Unsupported,
        Err(e) => FromCache::Failed(e.into()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_cached(_: &File, _: &mut [u8], _: u64) -> FromCache {
    FromCache::Unsupported
}

/// Reads `len` bytes at `at` into `buf`, waiting for the disk; fewer only at the end of the
/// file. Returns the buffer and the count.
fn read_full(file: &File, mut buf: Vec<u8>, len: usize, at: u64) -> io::Result<(Vec<u8>, usize)> {
    let mut n = 0;
    while n < len {
        match file.read_at(&mut buf[n..len], at + n as u64) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((buf, n))
}

/// The buffers one download recycles, zeroed once when allocated, so reads can fill any
/// part of them.
#[derive(Default)]
struct Pool(Arc<Mutex<Vec<Vec<u8>>>>);

impl Pool {
    /// A buffer of at least `len` bytes (at most [`CHUNK`]): a spare one, or a new one of
    /// exactly `len`, so a small blob (a config, a manifest) costs its size, not a chunk.
    /// Only the last read of a range asks for less than a chunk, so a short buffer is
    /// never wanted again.
    fn take(&self, len: usize) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .filter(|buf| buf.len() >= len)
            .unwrap_or_else(|| vec![0; len])
    }
}

/// A chunk's memory while the body holds it: the first `len` bytes of `buf`. Dropping it
/// returns the buffer to its download's pool, unless the download is gone or the pool is
/// full.
struct Recycled {
    buf: Vec<u8>,
    len: usize,
    pool: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if let Ok(mut spare) = pool.lock()
            && spare.len() < KEEP
        {
            spare.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use futures::TryStreamExt;

    use super::*;

    fn file_with(data: &[u8]) -> (tempfile::TempDir, PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        File::create(&path).unwrap().write_all(data).unwrap();
        let file = File::open(&path).unwrap();
        (dir, path, file)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    async fn collect(file: File, range: Range<u64>, path: PathBuf) -> Vec<Bytes> {
        stream(file, range, path).try_collect().await.unwrap()
    }

    #[tokio::test]
    async fn a_range_comes_back_whole_in_chunks_of_at_most_chunk() {
        let data = pattern(2 * CHUNK + 1000);
        let (_dir, path, file) = file_with(&data);
        let chunks = collect(file, 10..data.len() as u64 - 5, path).await;
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
        assert_eq!(chunks.concat(), data[10..data.len() - 5]);
    }

    #[tokio::test]
    async fn reused_buffers_never_leak_bytes_of_an_earlier_chunk() {
        // The last chunk is short and lands in a recycled buffer whose earlier, longer
        // contents must not show.
        let data = pattern(3 * CHUNK + 7);
        let (_dir, path, file) = file_with(&data);
        let mut s = stream(file, 0..data.len() as u64, path);
        let mut got = Vec::new();
        while let Some(chunk) = s.try_next().await.unwrap() {
            got.extend_from_slice(&chunk);
            drop(chunk); // back to the pool before the next read
        }
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_file_not_in_the_page_cache_is_read_on_the_blocking_pool() {
        let data = pattern(2 * CHUNK + 3);
        let (_dir, path, file) = file_with(&data);
        // Written back and dropped from the cache: the reads must wait for the disk.
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let mut probe = vec![0; 4096];
        assert!(matches!(
            read_cached(&file, &mut probe, CHUNK as u64),
            FromCache::Miss | FromCache::Unsupported
        ));
        let chunks = collect(file, 0..data.len() as u64, path).await;
        assert_eq!(chunks.concat(), data);
    }

    #[tokio::test]
    async fn an_empty_range_is_an_empty_stream() {
        let (_dir, path, file) = file_with(b"abc");
        assert!(collect(file, 2..2, path).await.is_empty());
    }

    #[tokio::test]
    async fn a_file_shorter_than_the_range_is_an_error_not_a_short_body() {
        let (_dir, path, file) = file_with(&[7u8; 100]);
        let mut s = stream(file, 0..CHUNK as u64 + 100, path);
        assert_eq!(s.try_next().await.unwrap().unwrap().len(), 100);
        let err = s.try_next().await.unwrap_err().to_string();
        assert!(err.contains("file ends at 100"), "{err}");
    }

    #[test]
    fn the_blocking_read_fills_the_whole_length_or_stops_at_the_end() {
        let data = pattern(CHUNK + 10);
        let (_dir, _path, file) = file_with(&data);
        let (buf, n) = read_full(&file, vec![0; CHUNK], CHUNK, 0).unwrap();
        assert_eq!((n, &buf[..n]), (CHUNK, &data[..CHUNK]));
        let (buf, n) = read_full(&file, buf, CHUNK, CHUNK as u64).unwrap();
        assert_eq!((n, &buf[..n]), (10, &data[CHUNK..]));
    }
}
