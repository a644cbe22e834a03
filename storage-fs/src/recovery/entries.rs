//! The journal's format (see [Format](super#format)): its header, and its entries as they
//! are written, parsed and read in order.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use bytes::Bytes;
use storage_traits::recovery::{MAX_PATH_LEN, validate_record_path};

pub(super) const HEADER: &[u8] = b"oci-registry recovery journal v1\n";
/// The longest entry line that can parse: `+ <path> <u64>\n`.
pub(super) const MAX_LINE: u64 = (2 + MAX_PATH_LEN + 1 + 20 + 1) as u64;
/// Read buffer of a scan.
pub(super) const SCAN_BUFFER: usize = 64 * 1024;

/// What a journal's first bytes say.
pub(super) enum Header {
    Ours,
    /// Part of the header then zeros, or nothing: a journal a crash cut right after its
    /// creation, which starts over.
    Blank,
    /// Anything else, not ours to cut.
    Foreign,
}

pub(super) fn check_header(file: &File, size: u64) -> io::Result<Header> {
    let mut reader = BufReader::with_capacity(SCAN_BUFFER, file);
    reader.seek(SeekFrom::Start(0))?;
    let mut start = Vec::with_capacity(HEADER.len());
    (&mut reader)
        .take(HEADER.len() as u64)
        .read_to_end(&mut start)?;
    if start == HEADER {
        return Ok(Header::Ours);
    }
    let matched = start.iter().zip(HEADER).take_while(|(a, b)| a == b).count();
    if start[matched..].iter().any(|&b| b != 0) {
        return Ok(Header::Foreign);
    }
    // The rest must be zeros too (a zero-filled tail); read in chunks, not at once.
    let mut rest = size.saturating_sub(start.len() as u64);
    while rest > 0 {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        if chunk.iter().any(|&b| b != 0) {
            return Ok(Header::Foreign);
        }
        let n = chunk.len();
        reader.consume(n);
        rest = rest.saturating_sub(n as u64);
    }
    Ok(Header::Blank)
}

#[derive(Debug)]
pub(super) enum Head {
    Put { path: String, len: u64 },
    Delete { path: String },
}

impl Head {
    pub(super) fn path(&self) -> &str {
        match self {
            Head::Put { path, .. } | Head::Delete { path } => path,
        }
    }
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) offset: u64,
    /// Bytes of the whole entry.
    pub(super) len: u64,
    pub(super) head: Head,
    /// A put's content, when the caller asked for it.
    pub(super) content: Option<Bytes>,
}

/// The entries of a journal, read in order from just after the header up to an end.
pub(super) struct Entries {
    reader: BufReader<File>,
    /// Offset of the next entry.
    pub(super) pos: u64,
    end: u64,
    line: Vec<u8>,
}

pub(super) fn torn() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "an entry does not parse")
}

impl Entries {
    /// Entries of `file` (which starts with the header) up to `end`.
    pub(super) fn after_header(mut file: File, end: u64) -> io::Result<Entries> {
        file.seek(SeekFrom::Start(HEADER.len() as u64))?;
        Ok(Entries {
            reader: BufReader::with_capacity(SCAN_BUFFER, file),
            pos: HEADER.len() as u64,
            end,
            line: Vec::new(),
        })
    }

    /// The journal, for positioned reads (which leave the scan's position alone).
    pub(super) fn file(&self) -> &File {
        self.reader.get_ref()
    }

    /// The next entry; `None` at the end. A put's content is read if `want(offset, path)`
    /// and skipped otherwise. An entry that does not parse or does not end by `end` is an
    /// [`io::ErrorKind::InvalidData`] error.
    pub(super) fn next_entry(
        &mut self,
        want: impl FnOnce(u64, &str) -> bool,
    ) -> io::Result<Option<Entry>> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(None);
        }
        self.line.clear();
        let n = (&mut self.reader)
            .take(left.min(MAX_LINE))
            .read_until(b'\n', &mut self.line)?;
        let Some(line) = self.line.strip_suffix(b"\n") else {
            return Err(torn());
        };
        let head = parse_head(line).ok_or_else(torn)?;
        let offset = self.pos;
        let mut len = n as u64;
        let mut content = None;
        if let Head::Put { path, len: size } = &head {
            // Content, then a newline, all before `end`.
            if len
                .checked_add(*size)
                .and_then(|l| l.checked_add(1))
                .is_none_or(|l| l > left)
            {
                return Err(torn());
            }
            if want(offset, path) {
                let mut data = Vec::new();
                (&mut self.reader).take(*size).read_to_end(&mut data)?;
                if data.len() as u64 != *size {
                    return Err(torn());
                }
                content = Some(Bytes::from(data));
            } else {
                let skip = i64::try_from(*size).map_err(|_| torn())?;
                self.reader.seek_relative(skip)?;
            }
            let mut newline = [0];
            match self.reader.read_exact(&mut newline) {
                Ok(()) if newline == *b"\n" => {}
                Ok(()) => return Err(torn()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(torn()),
                Err(e) => return Err(e),
            }
            len += size + 1;
        }
        self.pos += len;
        Ok(Some(Entry {
            offset,
            len,
            head,
            content,
        }))
    }
}

/// An entry's first line, without its newline.
fn parse_head(line: &[u8]) -> Option<Head> {
    let (path, len) = split_line(line)?;
    validate_record_path(path).ok()?;
    let path = path.to_string();
    Some(match len {
        Some(len) => Head::Put { path, len },
        None => Head::Delete { path },
    })
}

/// An entry's first line, without its newline: the path (not checked), and the content's
/// length if it is a put.
pub(super) fn split_line(line: &[u8]) -> Option<(&str, Option<u64>)> {
    let line = std::str::from_utf8(line).ok()?;
    if let Some(path) = line.strip_prefix("- ") {
        return Some((path, None));
    }
    let (path, len) = line.strip_prefix("+ ")?.rsplit_once(' ')?;
    Some((path, Some(len.parse().ok()?)))
}

pub(super) fn put_entry(path: &str, content: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(path.len() + content.len() + 24);
    e.extend_from_slice(format!("+ {path} {}\n", content.len()).as_bytes());
    e.extend_from_slice(content);
    e.push(b'\n');
    e
}

pub(super) fn delete_entry(path: &str) -> Vec<u8> {
    format!("- {path}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn entries_of(data: &[u8]) -> Vec<io::Result<Option<Entry>>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let mut all = HEADER.to_vec();
        all.extend_from_slice(data);
        fs::write(&path, &all).expect("write");
        let file = File::open(&path).expect("open");
        let mut entries = Entries::after_header(file, all.len() as u64).expect("entries");
        let mut out = Vec::new();
        loop {
            let next = entries.next_entry(|_, _| true);
            let stop = !matches!(next, Ok(Some(_)));
            out.push(next);
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn entries_round_trip() {
        let mut data = put_entry("a/b", b"x\ny");
        data.extend_from_slice(&delete_entry("a/b"));
        let got = entries_of(&data);
        let [Ok(Some(put)), Ok(Some(del)), Ok(None)] = got.as_slice() else {
            panic!("{got:?}");
        };
        assert!(matches!(&put.head, Head::Put { path, len: 3 } if path == "a/b"));
        assert_eq!(put.content.as_deref(), Some(&b"x\ny"[..]));
        assert_eq!((put.offset, put.len), (HEADER.len() as u64, 12));
        assert!(matches!(&del.head, Head::Delete { path } if path == "a/b"));
        assert_eq!(del.offset, HEADER.len() as u64 + 12);
    }

    #[test]
    fn torn_entries_do_not_parse() {
        let e = put_entry("a/b", b"x\ny");
        for torn in [
            &e[..e.len() - 1],
            b"+ a/b 5\nab",
            b"+ a/b 2\nabc\n",
            b"\0\0\0\0",
            b"+ ../x 1\na\n",
            b"- a b\n",
            b"+ a/b 99999999999999999999999\n",
        ] {
            let got = entries_of(torn);
            assert!(
                matches!(got.as_slice(), [Err(e)] if e.kind() == io::ErrorKind::InvalidData),
                "{:?}: {got:?}",
                String::from_utf8_lossy(torn)
            );
        }
        // A line longer than any valid one is torn without being read whole.
        let long = vec![b'+'; 10 * MAX_LINE as usize];
        assert!(matches!(entries_of(&long).as_slice(), [Err(_)]));
    }
}
