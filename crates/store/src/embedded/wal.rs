//! The write-ahead log that makes a batch durable with one sequential append and
//! `fdatasync`, instead of a full redb durable commit (which rewrites B-tree pages all
//! over the file and costs several times more on most disks).
//!
//! A batch's table mutations are recorded as blind operations (insert, remove, remove a
//! key's history range), appended as one framed, checksummed record and synced; only then
//! is the redb transaction committed (without fsync) and made visible. A fold (a durable
//! redb commit) makes everything logged so far durable in redb; the log is emptied only
//! after a fold once it is long (or at close), to save a sync per fold. On open, the whole
//! log is replayed; replaying a record that was already applied is harmless because every
//! operation is blind and they are applied in their original order. A torn last record
//! (a crash during the append) was never acknowledged and is dropped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x534b_5741; // "SKWA"
const HEADER: usize = 4 + 4 + 8;

pub(super) struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
}

/// FNV-1a: enough to tell a complete record from a torn or stale one.
fn checksum(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Wal {
    /// Open (or create) the log and return the complete records in it.
    pub fn open(path: &Path) -> std::io::Result<(Wal, Vec<Vec<u8>>)> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let mut records = Vec::new();
        let mut off = 0usize;
        while off + HEADER <= buf.len() {
            let word = |i: usize, n: usize| &buf[off + i..off + i + n];
            let magic = u32::from_le_bytes(word(0, 4).try_into().unwrap_or([0; 4]));
            let len = u32::from_le_bytes(word(4, 4).try_into().unwrap_or([0; 4])) as usize;
            let sum = u64::from_le_bytes(word(8, 8).try_into().unwrap_or([0; 8]));
            if magic != MAGIC || off + HEADER + len > buf.len() {
                break;
            }
            let payload = &buf[off + HEADER..off + HEADER + len];
            if checksum(payload) != sum {
                break;
            }
            records.push(payload.to_vec());
            off += HEADER + len;
        }
        let len = off as u64;
        if len != buf.len() as u64 {
            // Drop the torn tail so new records follow the last complete one.
            file.set_len(len)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(len))?;
        Ok((
            Wal {
                file,
                path: path.to_path_buf(),
                len,
            },
            records,
        ))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record and make it durable.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut rec = Vec::with_capacity(HEADER + payload.len());
        rec.extend_from_slice(&MAGIC.to_le_bytes());
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&checksum(payload).to_le_bytes());
        rec.extend_from_slice(payload);
        let res = self
            .file
            .write_all(&rec)
            .and_then(|_| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += rec.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Leave no partial record behind for the next append to follow.
                let _ = self.truncate_to(self.len);
                Err(e)
            }
        }
    }

    /// Cut the log back to `len` bytes (undo an append whose batch could not commit).
    pub fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.file.seek(SeekFrom::Start(len))?;
        self.len = len;
        Ok(())
    }
}

/// The table mutations of one batch, in order.
#[derive(Default)]
pub(super) struct OpLog(pub Vec<u8>);

pub(super) mod op {
    pub const META_PUT: u8 = 1;
    pub const HIST_PUT: u8 = 2;
    pub const HIST_REMOVE_BELOW: u8 = 3;
    pub const REVLOG_PUT: u8 = 4;
    pub const REVLOG_REMOVE: u8 = 5;
    pub const LATEST_PUT: u8 = 6;
    pub const LATEST_REMOVE: u8 = 7;
    pub const LEASE_PUT: u8 = 8;
    pub const LEASE_REMOVE: u8 = 9;
    pub const LEASE_KEY_PUT: u8 = 10;
    pub const LEASE_KEY_REMOVE: u8 = 11;
}

impl OpLog {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn tag(&mut self, t: u8) -> &mut Self {
        self.0.push(t);
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
}

/// Reads an [`OpLog`] back.
pub(super) struct OpReader<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> OpReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        OpReader { buf, off: 0 }
    }
    pub fn done(&self) -> bool {
        self.off >= self.buf.len()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.off..self.off + n)?;
        self.off += n;
        Some(s)
    }
    pub fn tag(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_dropped_and_appends_follow_the_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        {
            let (mut w, recs) = Wal::open(&path).unwrap();
            assert!(recs.is_empty());
            w.append(b"one").unwrap();
            w.append(b"two").unwrap();
        }
        // A crash in the middle of a third append.
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&MAGIC.to_le_bytes()).unwrap();
        f.write_all(&100u32.to_le_bytes()).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        let (mut w, recs) = Wal::open(&path).unwrap();
        assert_eq!(recs, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        w.append(b"three").unwrap();
        drop(w);
        // A flipped byte in the last record: it and what follows are not trusted.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (w, recs) = Wal::open(&path).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(w.len(), whole);
    }

    #[test]
    fn op_log_round_trips() {
        let mut l = OpLog::default();
        l.tag(op::HIST_PUT).bytes(b"/k").u64(7).bytes(b"value");
        let mut r = OpReader::new(&l.0);
        assert_eq!(r.tag(), Some(op::HIST_PUT));
        assert_eq!(r.str(), Some("/k"));
        assert_eq!(r.u64(), Some(7));
        assert_eq!(r.bytes(), Some(&b"value"[..]));
        assert!(r.done());
        assert_eq!(r.u64(), None);
    }
}
