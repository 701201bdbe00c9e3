//! SPDY/3.1 as Kubernetes streaming uses it (the server side): one session per upgraded
//! connection, streams opened by the client with SYN_STREAM whose headers say what each
//! stream is for (`streamtype`, `port`, `requestid`), DATA frames with FIN to half-close,
//! header blocks compressed with one zlib context per direction primed with the SPDY/3
//! dictionary.
//!
//! Flow control is not enforced in either direction: Kubernetes' SPDY peers neither send
//! nor wait for WINDOW_UPDATE, so honouring windows would only stall them.
//!
//! Lifecycle: [`Session::start`] spawns a reader and a writer task; new streams arrive on
//! [`Session::streams`]; each stream's inbound data arrives on its own channel, which ends
//! at the peer's FIN or RST. [`Session::close`] flushes what was queued and shuts the
//! connection down.

use std::collections::HashMap;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
/// Largest frame payload accepted (SPDY's length field allows 16 MiB).
const MAX_FRAME: usize = 1 << 24;
/// Largest inflated header block: Kubernetes' blocks are a few hundred bytes, and a
/// small compressed block must not expand into a memory bomb.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Header words of the SPDY/3 compression dictionary (draft-mbelshe-httpbis-spdy-00
/// section 2.6.10.1), each stored with a 32-bit length prefix.
const DICT_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's unprefixed tail (same section of the draft).
const DICT_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header compression dictionary.
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for w in DICT_WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICT_TAIL.as_bytes());
    d
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY connection I/O")]
    Io(#[from] std::io::Error),
    #[error("SPDY frame of {len} bytes is over the limit")]
    TooLarge { len: usize },
    #[error("SPDY protocol violation: {what}")]
    Protocol { what: String },
    #[error("SPDY header block does not decompress")]
    Zlib {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn protocol(what: impl Into<String>) -> SpdyError {
    SpdyError::Protocol { what: what.into() }
}

pub type Headers = Vec<(String, String)>;

/// Decodes an uncompressed SPDY/3 header block (names lowercased by the sender; a value
/// with NULs is several values).
pub fn parse_header_block(b: &[u8]) -> Result<Headers, SpdyError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let s = b
            .get(at..at + n)
            .ok_or_else(|| protocol("header block is truncated"))?;
        at += n;
        Ok(s)
    };
    let u32_at = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = u32_at(take(4)?);
    let mut out = Vec::new();
    for _ in 0..count {
        let nl = u32_at(take(4)?);
        let name = String::from_utf8_lossy(take(nl)?).to_ascii_lowercase();
        let vl = u32_at(take(4)?);
        let value = take(vl)?;
        for v in value.split(|c| *c == 0) {
            out.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(out)
}

pub fn encode_header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (k, v) in headers {
        let k = k.to_ascii_lowercase();
        b.extend_from_slice(&(k.len() as u32).to_be_bytes());
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The inflate side of one direction of a session.
pub struct Inflater {
    z: Decompress,
    dict: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            z: Decompress::new(true),
            dict: dictionary(),
        }
    }
}

impl Inflater {
    pub fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let res = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.z.total_in() - in0) as usize..];
            let progressed = self.z.total_in() != in0 || self.z.total_out() != out0;
            match res {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&self.dict)
                        .map_err(|e| SpdyError::Zlib { source: e.into() })?;
                }
                Err(e) => return Err(SpdyError::Zlib { source: e.into() }),
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) if input.is_empty() && out.len() < out.capacity() => return Ok(out),
                Ok(_) if !progressed && out.len() < out.capacity() => {
                    return Err(protocol("header block does not inflate"))
                }
                Ok(_) if out.len() > MAX_HEADER_BLOCK => {
                    return Err(protocol(format!(
                        "header block inflates past {MAX_HEADER_BLOCK} bytes"
                    )))
                }
                Ok(_) => {}
            }
        }
    }
}

/// The deflate side of one direction of a session.
pub struct Deflater {
    z: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // Setting a dictionary on a fresh zlib stream cannot fail.
        let _ = z.set_dictionary(&dictionary());
        Deflater { z }
    }
}

impl Deflater {
    pub fn deflate(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            let before = self.z.total_in();
            if self
                .z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .is_err()
            {
                return out;
            }
            input = &input[(self.z.total_in() - before) as usize..];
            // Done once all input is in and the flush did not fill the buffer.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

pub fn data_frame(id: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

/// SYN_STREAM as a client sends it (tests play the client).
pub fn syn_stream_frame(id: u32, fin: bool, block: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(block);
    control_frame(SYN_STREAM, if fin { FLAG_FIN } else { 0 }, &p)
}

/// A raw frame read off the wire.
#[derive(Debug)]
pub enum Frame {
    Control {
        kind: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Data {
        id: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, SpdyError> {
    let mut h = [0u8; 8];
    match r.read_exact(&mut h[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut h[1..]).await?;
    let flags = h[4];
    let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
    if len > MAX_FRAME {
        return Err(SpdyError::TooLarge { len });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if h[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([h[0] & 0x7f, h[1]]);
        if version != VERSION {
            return Err(protocol(format!("SPDY version {version}, expected 3")));
        }
        Ok(Some(Frame::Control {
            kind: u16::from_be_bytes([h[2], h[3]]),
            flags,
            payload,
        }))
    } else {
        Ok(Some(Frame::Data {
            id: u32::from_be_bytes([h[0], h[1], h[2], h[3]]) & 0x7fff_ffff,
            flags,
            data: payload,
        }))
    }
}

enum Out {
    Reply(u32),
    Data { id: u32, data: Bytes, fin: bool },
    Raw(Vec<u8>),
    Close,
}

/// A client-opened stream.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// Inbound data; ends at the client's FIN or RST_STREAM, or when the session ends.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Sends on one stream; cheap to clone.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    tx: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Queues `data`; false once the session is gone.
    pub async fn write(&self, data: Bytes) -> bool {
        self.tx
            .send(Out::Data {
                id: self.id,
                data,
                fin: false,
            })
            .await
            .is_ok()
    }

    /// Half-closes the stream (an empty DATA frame with FIN).
    pub async fn finish(&self) {
        let _ = self
            .tx
            .send(Out::Data {
                id: self.id,
                data: Bytes::new(),
                fin: true,
            })
            .await;
    }
}

/// One SPDY session over an upgraded connection.
pub struct Session {
    pub streams: mpsc::Receiver<Stream>,
    tx: mpsc::Sender<Out>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Session {
    pub fn start<IO: AsyncRead + AsyncWrite + Send + 'static>(io: IO) -> Session {
        let (rd, wr) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel(64);
        let (streams_tx, streams) = mpsc::channel(16);
        let writer = tokio::spawn(write_loop(wr, rx));
        let reader = tokio::spawn(read_loop(rd, tx.clone(), streams_tx));
        Session {
            streams,
            tx,
            reader,
            writer,
        }
    }

    /// Sends what was queued, then closes the connection.
    pub async fn close(mut self) {
        let _ = self.tx.send(Out::Close).await;
        let _ = (&mut self.writer).await;
        self.reader.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>) {
    let mut deflater = Deflater::default();
    while let Some(first) = rx.recv().await {
        // Batch what is already queued into one write.
        let mut buf = Vec::new();
        let mut close = false;
        let mut next = Some(first);
        while let Some(o) = next.take() {
            match o {
                Out::Reply(id) => {
                    let mut p = id.to_be_bytes().to_vec();
                    p.extend(deflater.deflate(&encode_header_block(&[])));
                    buf.extend(control_frame(SYN_REPLY, 0, &p));
                }
                Out::Data { id, data, fin } => {
                    // Keep frames well under the peer's read buffer.
                    let mut chunks = data.chunks(32 * 1024).peekable();
                    if chunks.peek().is_none() {
                        buf.extend(data_frame(id, fin, &[]));
                    }
                    while let Some(c) = chunks.next() {
                        buf.extend(data_frame(id, fin && chunks.peek().is_none(), c));
                    }
                }
                Out::Raw(f) => buf.extend(f),
                Out::Close => close = true,
            }
            if close || buf.len() > 256 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
        if close {
            break;
        }
    }
    let _ = w.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    tx: mpsc::Sender<Out>,
    streams_tx: mpsc::Sender<Stream>,
) {
    if let Err(e) = read_frames(&mut r, &tx, &streams_tx).await {
        tracing::debug!(error = %e, "SPDY session ended");
    }
}

async fn read_frames<R: AsyncRead + Unpin>(
    r: &mut R,
    tx: &mpsc::Sender<Out>,
    streams_tx: &mpsc::Sender<Stream>,
) -> Result<(), SpdyError> {
    let mut inflater = Inflater::default();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let u32_at = |p: &[u8], at: usize| -> Result<u32, SpdyError> {
        p.get(at..at + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(|| protocol("control frame is truncated"))
    };
    while let Some(frame) = read_frame(r).await? {
        match frame {
            Frame::Data { id, flags, data } => {
                if let Some(s) = open.get(&id) {
                    if !data.is_empty() && s.send(Bytes::from(data)).await.is_err() {
                        // The handler stopped reading this stream; drop what it would get.
                        open.remove(&id);
                    }
                }
                if flags & FLAG_FIN != 0 {
                    open.remove(&id);
                }
            }
            Frame::Control {
                kind,
                flags,
                payload,
            } => match kind {
                SYN_STREAM => {
                    let id = u32_at(&payload, 0)? & 0x7fff_ffff;
                    let block = payload
                        .get(10..)
                        .ok_or_else(|| protocol("SYN_STREAM is truncated"))?;
                    let headers = parse_header_block(&inflater.inflate(block)?)?;
                    let (dtx, drx) = mpsc::channel(32);
                    if flags & FLAG_FIN == 0 {
                        open.insert(id, dtx);
                    }
                    if tx.send(Out::Reply(id)).await.is_err() {
                        return Ok(());
                    }
                    let stream = Stream {
                        id,
                        headers,
                        data: drx,
                        writer: StreamWriter { id, tx: tx.clone() },
                    };
                    if streams_tx.send(stream).await.is_err() {
                        return Ok(());
                    }
                }
                HEADERS | SYN_REPLY => {
                    // Decompressed only to keep the zlib context in step with the peer.
                    let block = payload
                        .get(4..)
                        .ok_or_else(|| protocol("HEADERS is truncated"))?;
                    inflater.inflate(block)?;
                }
                RST_STREAM => {
                    open.remove(&(u32_at(&payload, 0)? & 0x7fff_ffff));
                }
                // Echo the peer's ping as is.
                PING if tx
                    .send(Out::Raw(control_frame(PING, 0, &payload)))
                    .await
                    .is_err() =>
                {
                    return Ok(())
                }
                GOAWAY => return Ok(()),
                SETTINGS | WINDOW_UPDATE => {}
                _ => {}
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_has_the_spec_size() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b"enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_through_shared_zlib_contexts() {
        let mut def = Deflater::default();
        let mut inf = Inflater::default();
        for i in 0..3 {
            let port = format!("80{i}");
            let block = encode_header_block(&[("streamType", "data"), ("port", &port)]);
            let z = def.deflate(&block);
            let h = parse_header_block(&inf.inflate(&z).unwrap()).unwrap();
            assert_eq!(header(&h, "streamtype"), Some("data"));
            assert_eq!(header(&h, "port"), Some(port.as_str()));
        }
    }

    proptest::proptest! {
        /// Whatever a client sends, the session ends or errors; it never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_header_block(&bytes);
            let _ = Inflater::default().inflate(&bytes);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (tx, _rx) = mpsc::channel(64);
                let (stx, _srx) = mpsc::channel(64);
                let _ = read_frames(&mut &bytes[..], &tx, &stx).await;
                let mut r = crate::ws::Reader::new(&bytes[..]);
                while let Ok(Some(_)) = r.next().await {}
            });
        }

        /// A valid SYN_STREAM prefix followed by a header block that does not decode ends the
        /// session with a zlib or protocol error, before any stream reaches a handler and
        /// before any reply is sent.
        #[test]
        fn garbage_header_blocks(block in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            // Random bytes that happen to inflate to a valid header block are not garbage.
            proptest::prop_assume!(Inflater::default()
                .inflate(&block)
                .and_then(|b| parse_header_block(&b))
                .is_err());
            let frame = syn_stream_frame(1, false, &block);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (r, replies, streams) = rt.block_on(async {
                let (tx, mut rx) = mpsc::channel(64);
                let (stx, mut srx) = mpsc::channel(64);
                let r = read_frames(&mut &frame[..], &tx, &stx).await;
                (r, rx.try_recv().is_ok(), srx.try_recv().is_ok())
            });
            proptest::prop_assert!(
                matches!(r, Err(SpdyError::Zlib { .. } | SpdyError::Protocol { .. })),
                "{:?}", r
            );
            proptest::prop_assert!(!replies && !streams, "a stream was opened from garbage");
        }
    }

    #[test]
    fn header_block_bomb_is_refused() {
        let z = Deflater::default().deflate(&vec![0u8; 4 << 20]);
        assert!(z.len() < 64 * 1024);
        assert!(Inflater::default().inflate(&z).is_err());
    }

    #[test]
    fn truncated_header_block_is_an_error() {
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
    }

    #[tokio::test]
    async fn session_replies_echoes_pings_and_delivers_data() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut session = Session::start(server);
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut def = Deflater::default();
        let block = def.deflate(&encode_header_block(&[("streamtype", "stdin")]));
        cw.write_all(&syn_stream_frame(1, false, &block))
            .await
            .unwrap();
        cw.write_all(&control_frame(PING, 0, &7u32.to_be_bytes()))
            .await
            .unwrap();
        cw.write_all(&data_frame(1, true, b"hi")).await.unwrap();
        let mut s = session.streams.recv().await.unwrap();
        assert_eq!(s.header("streamType"), Some("stdin"));
        assert_eq!(&s.data.recv().await.unwrap()[..], b"hi");
        assert!(s.data.recv().await.is_none());
        s.writer.write(Bytes::from_static(b"out")).await;
        s.writer.finish().await;
        let mut inf = Inflater::default();
        let mut seen = Vec::new();
        while seen.len() < 4 {
            match read_frame(&mut cr).await.unwrap().unwrap() {
                Frame::Control { kind, payload, .. } => {
                    if kind == SYN_REPLY {
                        inf.inflate(&payload[4..]).unwrap();
                    }
                    seen.push(format!("c{kind}"));
                }
                Frame::Data { id, flags, data } => {
                    seen.push(format!("d{id}:{}:{flags}", String::from_utf8_lossy(&data)))
                }
            }
        }
        assert_eq!(seen, ["c2", "c6", "d1:out:0", "d1::1"]);
        session.close().await;
    }
}
