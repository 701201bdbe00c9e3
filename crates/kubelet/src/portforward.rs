//! Port forwarding over SPDY (`portforward.k8s.io`): per forwarded connection the client
//! opens an `error` stream and a `data` stream carrying the same `port` and `requestid`
//! headers. The data stream is spliced to a connection the runtime opens in the pod; a
//! failure is written as text to the error stream. Both streams are half-closed when the
//! connection ends, which is what kubectl waits for.
//!
//! kubectl 1.31+ sends the same SPDY session inside WebSocket binary messages
//! (`SPDY/3.1+portforward.k8s.io`); [`websocket_tunnel`] turns those back into a byte
//! stream.
//!
//! Other WebSocket clients (the Python client) use the channel protocol
//! (`v4.channel.k8s.io`, [`serve_websocket_channels`]): the ports come in the `port` query
//! parameter, port i gets data channel 2i and error channel 2i+1, and the first message
//! on each channel is the port number (2 bytes, little-endian).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

use crate::runtime::StreamingRuntime;
use crate::{spdy, ws};

pub const PROTOCOL: &str = "portforward.k8s.io";
pub const WS_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
pub const WS_CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";

pub async fn serve_spdy<IO>(io: IO, rt: Arc<dyn StreamingRuntime>, namespace: String, pod: String)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = spdy::Session::start(io);
    let mut pending: HashMap<String, (Option<spdy::Stream>, Option<spdy::Stream>)> = HashMap::new();
    while let Some(s) = session.streams.recv().await {
        let port = s.header("port").unwrap_or_default().to_string();
        // Clients before requestid keyed pairs by port.
        let key = s
            .header("requestid")
            .map(str::to_string)
            .unwrap_or_else(|| format!("port:{port}"));
        let entry = pending.entry(key.clone()).or_default();
        match s.header("streamtype") {
            Some("error") => entry.0 = Some(s),
            Some("data") => entry.1 = Some(s),
            _ => continue,
        }
        if let (Some(_), Some(_)) = entry {
            if let Some((Some(err), Some(data))) = pending.remove(&key) {
                tokio::spawn(forward(
                    rt.clone(),
                    namespace.clone(),
                    pod.clone(),
                    port,
                    err,
                    data,
                ));
            }
        }
    }
    session.close().await;
}

async fn forward(
    rt: Arc<dyn StreamingRuntime>,
    namespace: String,
    pod: String,
    port: String,
    err: spdy::Stream,
    data: spdy::Stream,
) {
    let fail = |msg: String| async {
        err.writer.write(Bytes::from(msg)).await;
        err.writer.finish().await;
        data.writer.finish().await;
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => {
            return fail(format!(
                "invalid port {port:?} in the port-forward request: want 1-65535"
            ))
            .await
        }
    };
    let conn = match rt.port_forward(&namespace, &pod, port).await {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "error forwarding port {port} to pod {namespace}/{pod}: {}",
                e.full_message()
            ))
            .await
        }
    };
    let (mut cr, mut cw) = tokio::io::split(conn);
    let mut from_client = data.data;
    // Client → pod runs on its own: when the pod ends the connection, the forward is
    // over (as the kubelet's), whether or not the client closed its side; client-go
    // waits for the error stream to close before it closes the local connection.
    let up = tokio::spawn(async move {
        while let Some(b) = from_client.recv().await {
            if cw.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    });
    let writer = data.writer.clone();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !writer.write(Bytes::copy_from_slice(&buf[..n])).await {
                    break;
                }
            }
        }
    }
    writer.finish().await;
    err.writer.finish().await;
    up.abort();
}

/// Unwraps a WebSocket whose binary messages carry a byte stream (SPDY tunneling): the
/// returned stream reads the concatenated payloads and writes binary messages.
pub fn websocket_tunnel<IO>(io: IO) -> DuplexStream
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (rd, wr) = tokio::io::split(io);
    let (mut tr, mut tw) = tokio::io::split(theirs);
    let (frames_tx, _) = ws::spawn_writer(wr);
    let pongs = frames_tx.clone();
    tokio::spawn(async move {
        let mut rd = ws::Reader::new(rd);
        while let Ok(Some(m)) = rd.next().await {
            match m.opcode {
                ws::OP_BINARY if tw.write_all(&m.payload).await.is_err() => break,
                ws::OP_PING => {
                    let _ = pongs.send(ws::encode(ws::OP_PONG, &m.payload, None)).await;
                }
                ws::OP_CLOSE => break,
                _ => {}
            }
        }
        let _ = tw.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if frames_tx
                        .send(ws::encode(ws::OP_BINARY, &buf[..n], None))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = frames_tx.send(ws::close_frame()).await;
    });
    ours
}

/// Port forwarding over the WebSocket channel protocol: one connection per port for the
/// life of the session, which ends when every port's connection has ended (or failed).
pub async fn serve_websocket_channels<IO>(
    io: IO,
    rt: Arc<dyn StreamingRuntime>,
    namespace: String,
    pod: String,
    ports: Vec<u16>,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (frames_tx, writer) = ws::spawn_writer(wr);
    let frame = |ch: usize, data: &[u8]| {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(ch as u8);
        m.extend_from_slice(data);
        ws::encode(ws::OP_BINARY, &m, None)
    };
    let mut upstream: Vec<Option<tokio::io::WriteHalf<Box<dyn crate::runtime::Duplex>>>> =
        Vec::new();
    let mut downstream = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = (2 * i, 2 * i + 1);
        for ch in [data_ch, err_ch] {
            let _ = frames_tx.send(frame(ch, &port.to_le_bytes())).await;
        }
        match rt.port_forward(&namespace, &pod, *port).await {
            Ok(conn) => {
                let (mut r, w) = tokio::io::split(conn);
                upstream.push(Some(w));
                let tx = frames_tx.clone();
                downstream.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if tx.send(frame(data_ch, &buf[..n])).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }));
            }
            Err(e) => {
                let msg = format!(
                    "error forwarding port {port} to pod {namespace}/{pod}: {}",
                    e.full_message()
                );
                let _ = frames_tx.send(frame(err_ch, msg.as_bytes())).await;
                upstream.push(None);
            }
        }
    }
    let pongs = frames_tx.clone();
    let reader = tokio::spawn(async move {
        let mut rd = ws::Reader::new(rd);
        while let Ok(Some(m)) = rd.next().await {
            match m.opcode {
                ws::OP_BINARY | ws::OP_TEXT if !m.payload.is_empty() => {
                    let ch = m.payload[0] as usize;
                    if ch.is_multiple_of(2) {
                        if let Some(Some(w)) = upstream.get_mut(ch / 2) {
                            if w.write_all(&m.payload[1..]).await.is_err() {
                                upstream[ch / 2] = None;
                            }
                        }
                    }
                }
                ws::OP_PING => {
                    let _ = pongs.send(ws::encode(ws::OP_PONG, &m.payload, None)).await;
                }
                ws::OP_CLOSE => break,
                _ => {}
            }
        }
        for w in upstream.iter_mut().flatten() {
            let _ = w.shutdown().await;
        }
    });
    for d in downstream {
        let _ = d.await;
    }
    let _ = frames_tx.send(ws::close_frame()).await;
    drop(frames_tx);
    let _ = writer.await;
    reader.abort();
}
