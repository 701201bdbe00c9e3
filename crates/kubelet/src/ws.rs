//! WebSocket (RFC 6455) as the streaming server needs it: the server side of the opening
//! handshake, a frame reader that unmasks and reassembles messages, and a frame encoder
//! (masking is only for clients, which tests play).

use base64::Engine;
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Largest message accepted from a client; stdin and resize messages are small.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("reading a WebSocket frame")]
    Io(#[from] std::io::Error),
    #[error("WebSocket message of {len} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge { len: u64 },
    #[error("WebSocket protocol violation: {what}")]
    Protocol { what: &'static str },
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(hyper::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
}

/// The subprotocols the client offers, in its order.
pub fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    header_values(headers, "sec-websocket-protocol")
}

/// The comma-separated values of every `name` header, trimmed, in order.
pub fn header_values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The 101 response headers for an accepted handshake.
pub fn handshake_headers(
    request: &HeaderMap,
    protocol: &str,
) -> Result<Vec<(&'static str, HeaderValue)>, WsError> {
    let key = request
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .ok_or(WsError::Protocol {
            what: "the upgrade request has no Sec-WebSocket-Key",
        })?;
    let accept = HeaderValue::from_str(&accept_key(key)).map_err(|_| WsError::Protocol {
        what: "Sec-WebSocket-Key is not valid",
    })?;
    let proto = HeaderValue::from_str(protocol).map_err(|_| WsError::Protocol {
        what: "subprotocol is not a valid header value",
    })?;
    Ok(vec![
        ("upgrade", HeaderValue::from_static("websocket")),
        ("connection", HeaderValue::from_static("Upgrade")),
        ("sec-websocket-accept", accept),
        ("sec-websocket-protocol", proto),
    ])
}

/// One complete message (fragments joined) or control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub opcode: u8,
    pub payload: Bytes,
}

/// Reads messages from a byte stream.
pub struct Reader<R> {
    inner: R,
    /// A fragmented message in progress (control frames may come between fragments).
    partial: Option<(u8, Vec<u8>)>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            partial: None,
        }
    }

    /// The next message; `None` at a clean end of stream between frames.
    pub async fn next(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let mut h = [0u8; 2];
            match self.inner.read_exact(&mut h[..1]).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            self.inner.read_exact(&mut h[1..]).await?;
            let fin = h[0] & 0x80 != 0;
            let opcode = h[0] & 0x0f;
            let masked = h[1] & 0x80 != 0;
            let len = match h[1] & 0x7f {
                126 => u64::from(self.inner.read_u16().await?),
                127 => self.inner.read_u64().await?,
                n => u64::from(n),
            };
            let limit =
                MAX_MESSAGE as u64 - self.partial.as_ref().map_or(0, |(_, b)| b.len() as u64);
            if len > limit {
                return Err(WsError::TooLarge { len });
            }
            let mut mask = [0u8; 4];
            if masked {
                self.inner.read_exact(&mut mask).await?;
            }
            let mut payload = vec![0u8; len as usize];
            self.inner.read_exact(&mut payload).await?;
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            if opcode >= 0x8 {
                if !fin || len > 125 {
                    return Err(WsError::Protocol {
                        what: "fragmented or oversized control frame",
                    });
                }
                return Ok(Some(Message {
                    opcode,
                    payload: payload.into(),
                }));
            }
            match (&mut self.partial, opcode) {
                (None, OP_CONTINUATION) => {
                    return Err(WsError::Protocol {
                        what: "continuation frame without a message to continue",
                    })
                }
                (None, op) => self.partial = Some((op, payload)),
                (Some((_, buf)), OP_CONTINUATION) => buf.extend_from_slice(&payload),
                (Some(_), _) => {
                    return Err(WsError::Protocol {
                        what: "new message before the previous one was finished",
                    })
                }
            }
            if fin {
                let (opcode, payload) = self.partial.take().unwrap_or_default();
                return Ok(Some(Message {
                    opcode,
                    payload: payload.into(),
                }));
            }
        }
    }
}

/// One final frame; `mask` is set by clients only.
pub fn encode(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame with status 1000 (normal closure).
pub fn close_frame() -> Vec<u8> {
    encode(OP_CLOSE, &1000u16.to_be_bytes(), None)
}

/// The task that writes encoded frames to `wr` in the order they are sent, flushing
/// whenever none are queued, and shuts `wr` down once every sender is gone (or a write
/// fails).
pub fn spawn_writer<W>(mut wr: W) -> (mpsc::Sender<Vec<u8>>, JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(64);
    let task = tokio::spawn(async move {
        while let Some(f) = frames_rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                return;
            }
            if frames_rx.is_empty() && wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    });
    (frames_tx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn masked_fragments_reassemble() {
        let mut wire = Vec::new();
        let mut first = encode(OP_BINARY, b"hel", Some([1, 2, 3, 4]));
        first[0] &= 0x7f; // not final
        wire.extend(first);
        wire.extend(encode(OP_PING, b"p", Some([9, 9, 9, 9])));
        wire.extend(encode(OP_CONTINUATION, b"lo", Some([5, 6, 7, 8])));
        let big = vec![7u8; 70_000];
        wire.extend(encode(OP_BINARY, &big, None));
        let mut r = Reader::new(&wire[..]);
        assert_eq!(r.next().await.unwrap().unwrap().opcode, OP_PING);
        let m = r.next().await.unwrap().unwrap();
        assert_eq!((m.opcode, &m.payload[..]), (OP_BINARY, &b"hello"[..]));
        assert_eq!(r.next().await.unwrap().unwrap().payload.len(), 70_000);
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn rejects_stray_continuation_and_huge_frames() {
        let wire = encode(OP_CONTINUATION, b"x", None);
        assert!(Reader::new(&wire[..]).next().await.is_err());
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(matches!(
            Reader::new(&huge[..]).next().await,
            Err(WsError::TooLarge { .. })
        ));
    }
}
