//! Container logs in the CRI log format, as the kubelet and containerd write them.
//!
//! One record per line: `<timestamp> <stream> <tag> <content>\n`, where the timestamp
//! is RFC 3339 in UTC with nanoseconds (always nine digits here; readers accept 0–9),
//! the stream is `stdout` or `stderr`, and the tag is `F` for a full line (the content
//! was followed by a newline, which is not stored) or `P` for a partial one (a line
//! longer than [`MAX_LINE`] split into pieces, or output that ended without a newline).
//! Reading a log back therefore reproduces the output byte for byte, with the two
//! streams kept apart and each line's time known (`logs --timestamps`).
//!
//! Each instance of a container writes its own file ([`instance_path`]: `<n>.log` for
//! the n-th start), so the previous instance's log stays readable (`--previous`).
//! [`Copier`] turns a pipe into records; [`Reader`] reads records back, also from a
//! file that is still growing.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longer lines are split into partial records (containerd's default).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One record of a CRI log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub time: SystemTime,
    pub stream: Stream,
    /// `P`: the line goes on in the next record of the stream (no newline here).
    pub partial: bool,
    pub content: Vec<u8>,
}

impl Record {
    /// The output this record stands for: the content, plus the newline of a full line.
    pub fn output(&self) -> Vec<u8> {
        let mut v = self.content.clone();
        if !self.partial {
            v.push(b'\n');
        }
        v
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}, line {line}: not a CRI log record ({reason}): {text:?}")]
    Malformed {
        path: PathBuf,
        line: u64,
        reason: &'static str,
        text: String,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The log file of the `n`-th instance (0 for the first start) in `dir`.
pub fn instance_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n}.log"))
}

/// The log of the instance before the `n`-th, if there was one and it is still there.
pub fn previous_path(dir: &Path, n: u32) -> Option<PathBuf> {
    let p = instance_path(dir, n.checked_sub(1)?);
    p.exists().then_some(p)
}

/// `2024-05-01T12:34:56.123456789Z`.
pub fn format_time(t: SystemTime) -> String {
    skiff_runtime::state::rfc3339_nanos(t)
}

/// Parses RFC 3339 (`Z` or `±hh:mm`, 0–9 fraction digits).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        nanos = digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32);
    }
    let offset = match &s[i..] {
        "Z" | "z" => 0,
        z if z.len() == 6 && matches!(&z[0..1], "+" | "-") && &z[3..4] == ":" => {
            let oh: i64 = z[1..3].parse().ok()?;
            let om: i64 = z[4..6].parse().ok()?;
            let o = oh * 3600 + om * 60;
            if z.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One record as its line, newline included.
pub fn format_record(r: &Record) -> Vec<u8> {
    let mut v = Vec::with_capacity(r.content.len() + 48);
    v.extend_from_slice(format_time(r.time).as_bytes());
    v.push(b' ');
    v.extend_from_slice(r.stream.as_str().as_bytes());
    v.extend_from_slice(if r.partial { b" P " } else { b" F " });
    v.extend_from_slice(&r.content);
    v.push(b'\n');
    v
}

/// Parses one line (without its newline). `Err` carries the reason.
pub fn parse_record(line: &[u8]) -> Result<Record, &'static str> {
    let mut parts = line.splitn(4, |&c| c == b' ');
    let time = parts.next().ok_or("no timestamp")?;
    let time = std::str::from_utf8(time)
        .ok()
        .and_then(parse_time)
        .ok_or("bad timestamp")?;
    let stream = match parts.next() {
        Some(b"stdout") => Stream::Stdout,
        Some(b"stderr") => Stream::Stderr,
        _ => return Err("the stream is not stdout or stderr"),
    };
    let partial = match parts.next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err("the tag is not F or P"),
    };
    Ok(Record {
        time,
        stream,
        partial,
        content: parts.next().unwrap_or_default().to_vec(),
    })
}

/// Size-based rotation of a log, as the kubelet's `--container-log-max-size` and
/// `--container-log-max-files`: before a record would take the file past `max_size`, the
/// file is renamed to `<name>.<YYYYMMDD-hhmmss>` (UTC; `-1`, `-2`… when that name is
/// taken) and a new one started, so a record is never split between files and none is
/// lost; of the rotated files the newest `max_files - 1` are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_size: u64,
    /// Files kept per log, the current one included (at least 2).
    pub max_files: u32,
}

/// The name a log rotated at `t` gets (`0.log.20161006-001709`), `seq` > 0 when a file
/// rotated in the same second has the plain one.
pub fn rotated_path(path: &Path, t: SystemTime, seq: u32) -> PathBuf {
    let iso = format_time(t);
    // 2016-10-06T00:17:09.… → 20161006-001709
    let stamp = format!(
        "{}{}{}-{}{}{}",
        &iso[0..4],
        &iso[5..7],
        &iso[8..10],
        &iso[11..13],
        &iso[14..16],
        &iso[17..19]
    );
    let mut name = path.as_os_str().to_os_string();
    name.push(".");
    name.push(stamp);
    if seq > 0 {
        name.push(format!("-{seq}"));
    }
    PathBuf::from(name)
}

/// Where the log at `path` goes when rotated at `t`: [`rotated_path`] with a `seq` after
/// every file rotated in the same second (older ones may have been removed meanwhile).
pub fn next_rotated_path(path: &Path, t: SystemTime) -> PathBuf {
    let plain = rotated_path(path, t, 0);
    let plain_name = plain
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let last = rotated_files(path)
        .iter()
        .filter_map(|p| {
            let n = p.file_name()?.to_string_lossy().into_owned();
            let rest = n.strip_prefix(&plain_name)?;
            let rest = rest.strip_suffix(".gz").unwrap_or(rest);
            match rest {
                "" => Some(0),
                r => r.strip_prefix('-')?.parse::<u32>().ok(),
            }
        })
        .max();
    match last {
        None => plain,
        Some(n) => rotated_path(path, t, n + 1),
    }
}

/// The rotated files of the log at `path`, oldest first.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", base.to_string_lossy());
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<((String, u32), PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let suffix = name.strip_prefix(&prefix)?;
            let suffix = suffix.strip_suffix(".gz").unwrap_or(suffix);
            let (stamp, seq) = match suffix.get(15..) {
                Some("") => (suffix, 0),
                Some(rest) => (&suffix[..15], rest.strip_prefix('-')?.parse().ok()?),
                None => return None,
            };
            let ok = stamp.len() == 15
                && stamp.as_bytes()[8] == b'-'
                && stamp
                    .bytes()
                    .enumerate()
                    .all(|(i, c)| i == 8 || c.is_ascii_digit());
            ok.then(|| ((stamp.to_string(), seq), e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

#[derive(Debug)]
struct Output {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Option<Rotation>,
}

impl Output {
    /// Renames the file aside and starts a new one; on any failure the current file
    /// stays in use (a log a little over its size beats a lost line).
    fn rotate(&mut self, r: Rotation) {
        let now = SystemTime::now();
        let target = next_rotated_path(&self.path, now);
        if std::fs::rename(&self.path, &target).is_err() {
            return;
        }
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => {
                self.file = f;
                self.size = 0;
            }
            Err(_) => {
                // Keep writing to the renamed file; the next rotation tries again.
                return;
            }
        }
        let old = rotated_files(&self.path);
        let keep = r.max_files.saturating_sub(1).max(1) as usize;
        for p in old.iter().take(old.len().saturating_sub(keep)) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Appends records to one log file; shared by the stdout and stderr copiers, one whole
/// line per write so records never interleave. With a [`Rotation`] it rotates the file
/// between records.
#[derive(Debug, Clone)]
pub struct Writer {
    out: Arc<Mutex<Output>>,
}

impl Writer {
    /// Opens (appending, creating) `path`.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        Self::open_rotating(path, None)
    }

    /// Opens (appending, creating) `path`, rotating it as `rotation` says.
    pub fn open_rotating(path: &Path, rotation: Option<Rotation>) -> Result<Self, LogError> {
        let err = |source| LogError::Io {
            op: "opening",
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(Writer {
            out: Arc::new(Mutex::new(Output {
                path: path.to_path_buf(),
                file,
                size,
                rotation,
            })),
        })
    }

    pub fn write(&self, stream: Stream, partial: bool, content: &[u8]) -> io::Result<()> {
        let line = format_record(&Record {
            time: SystemTime::now(),
            stream,
            partial,
            content: content.to_vec(),
        });
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = out.rotation {
            if out.size > 0 && out.size + line.len() as u64 > r.max_size {
                out.rotate(r);
            }
        }
        out.file.write_all(&line)?;
        out.size += line.len() as u64;
        Ok(())
    }
}

/// Where else a stream's output goes while someone is attached.
pub type Sinks = Arc<Mutex<Vec<File>>>;

/// Copies one stream (a pipe from the container) into the log until EOF, line by line;
/// every chunk is also written raw to the attached sinks (a sink that fails is dropped).
pub struct Copier {
    pub stream: Stream,
    pub writer: Writer,
    pub sinks: Sinks,
}

impl Copier {
    pub fn run(self, mut from: impl Read) -> io::Result<()> {
        let mut buf = vec![0u8; 32 * 1024];
        let mut line: Vec<u8> = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let chunk = &buf[..n];
            {
                let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
                sinks.retain_mut(|s| s.write_all(chunk).is_ok());
            }
            for piece in chunk.split_inclusive(|&c| c == b'\n') {
                let (body, full) = match piece.strip_suffix(b"\n") {
                    Some(body) => (body, true),
                    None => (piece, false),
                };
                line.extend_from_slice(body);
                while line.len() > MAX_LINE {
                    let rest = line.split_off(MAX_LINE);
                    self.writer.write(self.stream, true, &line)?;
                    line = rest;
                }
                if full {
                    self.writer.write(self.stream, false, &line)?;
                    line.clear();
                } else if line.len() == MAX_LINE {
                    self.writer.write(self.stream, true, &line)?;
                    line.clear();
                }
            }
        }
        if !line.is_empty() {
            // Output that ended without a newline: partial, so it reads back exactly.
            self.writer.write(self.stream, true, &line)?;
        }
        Ok(())
    }
}

/// Reads records from a log, also one that is still being written: [`Reader::read_new`]
/// returns the complete lines added since the last call.
pub struct Reader {
    path: PathBuf,
    file: File,
    pending: Vec<u8>,
    line_no: u64,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let file = File::open(path).map_err(|source| LogError::Io {
            op: "opening",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Reader {
            path: path.to_path_buf(),
            file,
            pending: Vec::new(),
            line_no: 0,
        })
    }

    /// The records completed since the last call (none at the current end).
    pub fn read_new(&mut self) -> Result<Vec<Record>, LogError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.file.read(&mut buf).map_err(|source| LogError::Io {
                op: "reading",
                path: self.path.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(i) = self.pending[start..].iter().position(|&c| c == b'\n') {
            let line = &self.pending[start..start + i];
            self.line_no += 1;
            let r = parse_record(line).map_err(|reason| LogError::Malformed {
                path: self.path.clone(),
                line: self.line_no,
                reason,
                text: String::from_utf8_lossy(line).chars().take(80).collect(),
            })?;
            out.push(r);
            start += i + 1;
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// For a followed log: when the writer has rotated it (its path names another file
    /// now), the records left in the old file, and from then on the new file is read.
    /// `None` while the path still names the file being read (or names nothing yet).
    pub fn follow_rotation(&mut self) -> Result<Option<Vec<Record>>, LogError> {
        use std::os::unix::fs::MetadataExt;
        let Ok(named) = std::fs::metadata(&self.path) else {
            return Ok(None);
        };
        let open = self.file.metadata().map_err(|source| LogError::Io {
            op: "reading",
            path: self.path.clone(),
            source,
        })?;
        if named.ino() == open.ino() && named.dev() == open.dev() {
            return Ok(None);
        }
        // The writer renamed the old file before it opened the new one: the old file is
        // complete.
        let rest = self.read_new()?;
        self.file = File::open(&self.path).map_err(|source| LogError::Io {
            op: "opening",
            path: self.path.clone(),
            source,
        })?;
        self.pending.clear();
        self.line_no = 0;
        Ok(Some(rest))
    }
}

/// Writes records as the container wrote them, each stream to its own writer; with
/// `timestamps`, each line starts with its record's time (as `docker logs -t`).
pub struct Render<O, E> {
    pub stdout: O,
    pub stderr: E,
    pub timestamps: bool,
    /// Per stream: whether the next record starts a line (after a full one).
    at_start: [bool; 2],
}

impl<O: Write, E: Write> Render<O, E> {
    pub fn new(stdout: O, stderr: E, timestamps: bool) -> Self {
        Render {
            stdout,
            stderr,
            timestamps,
            at_start: [true, true],
        }
    }

    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        let i = r.stream as usize;
        let out: &mut dyn Write = match r.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        if self.timestamps && self.at_start[i] {
            out.write_all(format_time(r.time).as_bytes())?;
            out.write_all(b" ")?;
        }
        out.write_all(&r.content)?;
        if !r.partial {
            out.write_all(b"\n")?;
        }
        self.at_start[i] = !r.partial;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stdout.flush()?;
        self.stderr.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_format_and_parse() {
        let t = UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_202);
        assert_eq!(format_time(t), "2016-10-06T00:17:09.669794202Z");
        assert_eq!(parse_time("2016-10-06T00:17:09.669794202Z"), Some(t));
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_time(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000000Z"
        );
        // What containerd writes (trailing zeros trimmed) and other offsets.
        assert_eq!(
            parse_time("2016-10-06T00:17:09.6697942Z"),
            Some(UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_200))
        );
        assert_eq!(
            parse_time("2016-10-06T02:17:09+02:00"),
            Some(UNIX_EPOCH + Duration::new(1_475_713_029, 0))
        );
        for bad in [
            "",
            "2016-10-06 00:17:09Z",
            "2016-13-06T00:17:09Z",
            "2016-10-06T00:17:09",
            "2016-10-06T00:17:09.Z",
            "2016-10-06T00:17:09.1234567890Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        // Round trip over a range of days.
        for days in (-1000..100_000).step_by(37) {
            let t = UNIX_EPOCH + Duration::from_secs((days as i64 * 86_400 + 4321).max(0) as u64);
            assert_eq!(parse_time(&format_time(t)), Some(t));
        }
    }

    #[test]
    fn records_format_and_parse() {
        let r = Record {
            time: UNIX_EPOCH + Duration::new(1_475_713_029, 5),
            stream: Stream::Stderr,
            partial: false,
            content: b"oops: a b".to_vec(),
        };
        let line = format_record(&r);
        assert_eq!(
            line,
            b"2016-10-06T00:17:09.000000005Z stderr F oops: a b\n".to_vec()
        );
        assert_eq!(parse_record(&line[..line.len() - 1]).unwrap(), r);
        // An empty line is a full record with no content.
        let e = parse_record(b"2016-10-06T00:17:09Z stdout F ").unwrap();
        assert_eq!((e.content.len(), e.partial), (0, false));
        let p = parse_record(b"2016-10-06T00:17:09Z stdout P abc").unwrap();
        assert_eq!(p.output(), b"abc");
        assert_eq!(parse_record(b"garbage"), Err("bad timestamp"));
        assert_eq!(
            parse_record(b"2016-10-06T00:17:09Z stdin F x"),
            Err("the stream is not stdout or stderr")
        );
        assert_eq!(
            parse_record(b"2016-10-06T00:17:09Z stdout X x"),
            Err("the tag is not F or P")
        );
    }

    #[test]
    fn copier_and_reader_keep_streams_apart_and_output_exact() {
        let d = tempfile::tempdir().unwrap();
        let path = instance_path(d.path(), 0);
        let w = Writer::open(&path).unwrap();
        let sink = tempfile::tempfile().unwrap();
        let sinks: Sinks = Arc::new(Mutex::new(vec![sink.try_clone().unwrap()]));
        let long = vec![b'x'; MAX_LINE + 10];
        let mut out = b"hello\n\nworld\n".to_vec();
        out.extend_from_slice(&long);
        out.extend_from_slice(b"\ntail without newline");
        Copier {
            stream: Stream::Stdout,
            writer: w.clone(),
            sinks: sinks.clone(),
        }
        .run(&out[..])
        .unwrap();
        Copier {
            stream: Stream::Stderr,
            writer: w,
            sinks: Arc::new(Mutex::new(Vec::new())),
        }
        .run(&b"oops\n"[..])
        .unwrap();
        let mut reader = Reader::open(&path).unwrap();
        let recs = reader.read_new().unwrap();
        let tags: Vec<(Stream, bool, usize)> = recs
            .iter()
            .map(|r| (r.stream, r.partial, r.content.len()))
            .collect();
        assert_eq!(
            tags,
            [
                (Stream::Stdout, false, 5),
                (Stream::Stdout, false, 0),
                (Stream::Stdout, false, 5),
                (Stream::Stdout, true, MAX_LINE),
                (Stream::Stdout, false, 10),
                (Stream::Stdout, true, 20),
                (Stream::Stderr, false, 4),
            ]
        );
        let mut render = Render::new(Vec::new(), Vec::new(), false);
        for r in &recs {
            render.write(r).unwrap();
        }
        assert_eq!(render.stdout, out);
        assert_eq!(render.stderr, b"oops\n");
        // The attached sink got the raw stdout.
        let mut got = Vec::new();
        let mut s = sink;
        std::io::Seek::seek(&mut s, std::io::SeekFrom::Start(0)).unwrap();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, out);
        // Nothing new: nothing returned; a line being written is not returned half.
        assert!(reader.read_new().unwrap().is_empty());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"2016-10-06T00:17:09Z stdout F ha").unwrap();
        assert!(reader.read_new().unwrap().is_empty());
        f.write_all(b"lf\n").unwrap();
        assert_eq!(reader.read_new().unwrap()[0].content, b"half");
        f.write_all(b"not a record\n").unwrap();
        let e = reader.read_new().unwrap_err();
        assert!(e.to_string().contains("line 9"), "{e}");
        assert_eq!(previous_path(d.path(), 1), Some(path));
        assert_eq!(previous_path(d.path(), 0), None);
    }

    #[test]
    fn timestamps_start_each_line() {
        let t = UNIX_EPOCH + Duration::new(1_475_713_029, 0);
        let rec = |partial, content: &[u8]| Record {
            time: t,
            stream: Stream::Stdout,
            partial,
            content: content.to_vec(),
        };
        let mut render = Render::new(Vec::new(), Vec::new(), true);
        for r in [rec(true, b"a"), rec(false, b"b"), rec(false, b"c")] {
            render.write(&r).unwrap();
        }
        assert_eq!(
            String::from_utf8(render.stdout).unwrap(),
            "2016-10-06T00:17:09.000000000Z ab\n2016-10-06T00:17:09.000000000Z c\n"
        );
    }

    #[test]
    fn rotation_names_sort_and_parse() {
        let t = UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_202);
        let p = Path::new("/x/0.log");
        assert_eq!(rotated_path(p, t, 0), Path::new("/x/0.log.20161006-001709"));
        assert_eq!(
            rotated_path(p, t, 2),
            Path::new("/x/0.log.20161006-001709-2")
        );
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("0.log");
        for n in [
            "0.log.20161006-001710",
            "0.log.20161006-001709-1",
            "0.log.20161006-001709",
            "0.log.20161006-001709-10",
            "0.log.20161006-001709-2.gz",
            "0.log",
            "1.log.20161006-001700",
            "0.log.junk",
            "0.log.20161006-00170x",
        ] {
            std::fs::write(d.path().join(n), "").unwrap();
        }
        let names: Vec<String> = rotated_files(&log)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "0.log.20161006-001709",
                "0.log.20161006-001709-1",
                "0.log.20161006-001709-2.gz",
                "0.log.20161006-001709-10",
                "0.log.20161006-001710",
            ]
        );
    }

    #[test]
    fn a_rotating_writer_keeps_whole_records_and_max_files() {
        let d = tempfile::tempdir().unwrap();
        let path = instance_path(d.path(), 0);
        let w = Writer::open_rotating(
            &path,
            Some(Rotation {
                max_size: 200,
                max_files: 3,
            }),
        )
        .unwrap();
        // A follower that opened the first file sees every line across rotations.
        let mut follower = Reader::open(&path).unwrap();
        let mut followed = Vec::new();
        for i in 0..100 {
            w.write(Stream::Stdout, false, format!("line {i:03}").as_bytes())
                .unwrap();
            followed.extend(follower.read_new().unwrap());
            if let Some(rest) = follower.follow_rotation().unwrap() {
                followed.extend(rest);
                followed.extend(follower.read_new().unwrap());
            }
        }
        followed.extend(follower.read_new().unwrap());
        let got: Vec<String> = followed
            .iter()
            .map(|r| String::from_utf8(r.content.clone()).unwrap())
            .collect();
        let want: Vec<String> = (0..100).map(|i| format!("line {i:03}")).collect();
        assert_eq!(got, want);
        // Every file holds whole records within the size; two rotated files are kept.
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let mut all = Vec::new();
        for p in rotated.iter().chain([&path]) {
            let text = std::fs::read(p).unwrap();
            assert!(
                text.len() <= 200,
                "{} has {} bytes",
                p.display(),
                text.len()
            );
            let recs = Reader::open(p).unwrap().read_new().unwrap();
            assert_eq!(recs.len() * 49, text.len(), "whole 49-byte records");
            all.extend(recs);
        }
        // The kept files are the newest lines, in order.
        let last = all.last().unwrap().content.clone();
        assert_eq!(last, b"line 099");
        let nums: Vec<u32> = all
            .iter()
            .map(|r| {
                std::str::from_utf8(&r.content[5..])
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        // Without rotation the file just grows.
        let plain = d.path().join("plain.log");
        let w = Writer::open(&plain).unwrap();
        for _ in 0..20 {
            w.write(Stream::Stderr, false, b"0123456789").unwrap();
        }
        assert!(rotated_files(&plain).is_empty());
    }
}
