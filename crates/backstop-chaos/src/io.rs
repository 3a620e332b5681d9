//! Connection IO wrapper that lets a request handler kill its connection, and follows the
//! HTTP/2 frames crossing it so a handler can answer with frames hyper would not send.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio_rustls::server::TlsStream;

use crate::lock;

/// A plain or TLS server-side stream.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// What the connection task should do once a handler asked to take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Reset,
    Close,
    Garbage,
    /// Write an HTTP/2 `GOAWAY(NO_ERROR)` with this last-stream-id, then close.
    GoAway {
        last_stream_id: u32,
    },
}

/// The client's HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame type of `HEADERS`, the frame that opens a stream.
const HEADERS: u8 = 0x1;

/// What the HTTP/2 side of a connection has seen, for an honest `GOAWAY`.
#[derive(Debug, Default)]
struct H2Streams {
    /// The highest stream id the client opened so far (read off its `HEADERS` frames).
    max_opened: u32,
    /// An upper bound of every stream id handed to the application (recorded as a delivery or
    /// about to be): `max_opened` at the moment each of them started.
    processed_bound: u32,
    /// The last-stream-id of the `GOAWAY` decided for this connection, if one was.
    goaway: Option<u32>,
}

/// Per-connection control block shared by the IO, the service and the
/// connection task.
pub(crate) struct ConnCtl {
    action: Mutex<Option<Action>>,
    pub(crate) notify: Notify,
    returned: Mutex<Option<Stream>>,
    h2: Mutex<H2Streams>,
    /// Whether the bytes hyper wrote end on an HTTP/2 frame boundary (set when the IO is
    /// dropped): only then can a frame of ours follow them.
    write_at_boundary: AtomicBool,
    graceful_wanted: AtomicBool,
    graceful_started: watch::Sender<bool>,
}

impl Default for ConnCtl {
    fn default() -> Self {
        ConnCtl {
            action: Mutex::new(None),
            notify: Notify::new(),
            returned: Mutex::new(None),
            h2: Mutex::new(H2Streams::default()),
            write_at_boundary: AtomicBool::new(false),
            graceful_wanted: AtomicBool::new(false),
            graceful_started: watch::Sender::new(false),
        }
    }
}

impl ConnCtl {
    /// Marks an HTTP/2 request as handed to the application. `false` when the connection has
    /// already decided on a `GOAWAY`: the request must then not be delivered, since the GOAWAY
    /// may have told the client it was not processed.
    pub(crate) fn h2_begin_processing(&self) -> bool {
        let mut h2 = lock(&self.h2);
        if h2.goaway.is_some() {
            return false;
        }
        // Every stream opened so far may be the one this request came on: the bound covers it.
        h2.processed_bound = h2.processed_bound.max(h2.max_opened);
        true
    }

    /// Decides the connection's `GOAWAY` and returns its last-stream-id: the bound of every
    /// stream handed to the application, so no delivered stream is ever claimed unprocessed.
    /// `None` if another request already decided one.
    pub(crate) fn h2_decide_goaway(&self) -> Option<u32> {
        let mut h2 = lock(&self.h2);
        if h2.goaway.is_some() {
            return None;
        }
        let last = h2.processed_bound;
        h2.goaway = Some(last);
        Some(last)
    }

    fn h2_opened(&self, stream_id: u32) {
        let mut h2 = lock(&self.h2);
        h2.max_opened = h2.max_opened.max(stream_id);
    }

    /// Whether hyper's last write ended on a frame boundary (meaningful once the IO is gone).
    pub(crate) fn write_at_boundary(&self) -> bool {
        self.write_at_boundary.load(Ordering::Acquire)
    }

    /// Asks the connection task to start a graceful shutdown of the connection, and waits until
    /// it has (so an HTTP/2 `GOAWAY` precedes the response the caller is about to give).
    pub(crate) async fn graceful_shutdown(&self) {
        let mut started = self.graceful_started.subscribe();
        self.graceful_wanted.store(true, Ordering::Release);
        self.notify.notify_one();
        let _ = started.wait_for(|on| *on).await;
    }

    pub(crate) fn graceful_wanted(&self) -> bool {
        self.graceful_wanted.load(Ordering::Acquire)
    }

    pub(crate) fn graceful_started(&self) {
        self.graceful_started.send_replace(true);
    }

    /// Asks the connection task to drop the HTTP connection and perform
    /// `action` on the raw stream. The first request wins.
    pub(crate) fn request(&self, action: Action) {
        let mut a = lock(&self.action);
        if a.is_none() {
            *a = Some(action);
            self.notify.notify_one();
        }
    }

    pub(crate) fn action(&self) -> Option<Action> {
        *lock(&self.action)
    }

    /// The stream handed back by [`ChaosIo`]'s drop, if an action was asked.
    pub(crate) fn take_stream(&self) -> Option<Stream> {
        lock(&self.returned).take()
    }
}

/// Follows frame boundaries in one direction of an HTTP/2 connection (after the preface).
#[derive(Debug, Default)]
struct FrameScan {
    head: [u8; 9],
    /// Bytes of the current frame header seen so far.
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
}

impl FrameScan {
    /// Feeds the next bytes; `on_head` sees every complete frame header.
    fn feed(&mut self, mut bytes: &[u8], mut on_head: impl FnMut(&[u8; 9])) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (self.head.len() - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == self.head.len() {
                self.have = 0;
                self.payload_left =
                    u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]) as usize;
                on_head(&self.head);
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }
}

/// The stream id of a frame header (the reserved bit cleared).
fn stream_id(head: &[u8; 9]) -> u32 {
    u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff
}

/// What the bytes read so far say about the protocol.
#[derive(Debug)]
enum Inbound {
    /// This many bytes of the HTTP/2 preface matched so far.
    Preface(usize),
    /// HTTP/2: frames follow.
    Frames(FrameScan),
    /// Not HTTP/2: nothing to follow.
    Other,
}

/// Follows the bytes a client sent: the preface, then the streams its `HEADERS` frames open.
fn saw_read(inbound: &mut Inbound, ctl: &ConnCtl, mut bytes: &[u8]) {
    if let Inbound::Preface(matched) = *inbound {
        let n = (PREFACE.len() - matched).min(bytes.len());
        *inbound = if bytes[..n] != PREFACE[matched..matched + n] {
            Inbound::Other
        } else if matched + n == PREFACE.len() {
            Inbound::Frames(FrameScan::default())
        } else {
            Inbound::Preface(matched + n)
        };
        bytes = &bytes[n..];
    }
    if let Inbound::Frames(scan) = inbound {
        scan.feed(bytes, |head| {
            if head[3] == HEADERS {
                ctl.h2_opened(stream_id(head));
            }
        });
    }
}

/// The IO hyper sees: a pass-through over [`Stream`] that, when dropped after
/// an [`Action`] was requested, hands the raw stream back to the connection
/// task instead of closing it.
///
/// On an HTTP/2 connection it also follows the frames: the streams the client opens (for the
/// last-stream-id of a `GOAWAY`) and whether what hyper wrote ends on a frame boundary (so a
/// frame of ours can follow it).
pub(crate) struct ChaosIo {
    stream: Option<Stream>,
    ctl: Arc<ConnCtl>,
    inbound: Inbound,
    outbound: FrameScan,
}

impl ChaosIo {
    pub(crate) fn new(stream: Stream, ctl: Arc<ConnCtl>) -> ChaosIo {
        ChaosIo {
            stream: Some(stream),
            ctl,
            inbound: Inbound::Preface(0),
            outbound: FrameScan::default(),
        }
    }

    fn is_h2(&self) -> bool {
        matches!(self.inbound, Inbound::Frames(_))
    }

    fn saw_written(&mut self, bytes: &[u8]) {
        if self.is_h2() {
            self.outbound.feed(bytes, |_| {});
        }
    }

    fn inner(&mut self) -> io::Result<Pin<&mut Stream>> {
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for ChaosIo {
    fn drop(&mut self) {
        self.ctl
            .write_at_boundary
            .store(self.outbound.at_boundary(), Ordering::Release);
        if let Some(stream) = self.stream.take()
            && self.ctl.action().is_some()
        {
            *lock(&self.ctl.returned) = Some(stream);
        }
    }
}

impl AsyncRead for ChaosIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = match this.inner() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        };
        if let Poll::Ready(Ok(())) = res {
            saw_read(&mut this.inbound, &this.ctl, &buf.filled()[before..]);
        }
        res
    }
}

impl AsyncWrite for ChaosIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = match this.inner() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        };
        if let Poll::Ready(Ok(n)) = res {
            this.saw_written(&buf[..n.min(buf.len())]);
        }
        res
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = match this.inner() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        };
        if let Poll::Ready(Ok(n)) = res {
            let mut left = n;
            for buf in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(buf.len());
                this.saw_written(&buf[..take]);
                left -= take;
            }
        }
        res
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, 0];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Frame headers are found however the bytes are cut, and payloads never read as headers.
    #[test]
    fn frame_scan_follows_boundaries_across_any_split() {
        let mut bytes = frame(0x4, 0, &[0; 12]);
        // A DATA payload that looks like a HEADERS frame header for stream 99.
        bytes.extend(frame(0x0, 1, &frame(HEADERS, 99, &[])));
        bytes.extend(frame(HEADERS, 3, b"hpack"));
        for cut in 1..bytes.len() {
            let mut scan = FrameScan::default();
            let mut heads = Vec::new();
            for piece in bytes.chunks(cut) {
                scan.feed(piece, |h| heads.push((h[3], stream_id(h))));
            }
            assert_eq!(heads, [(0x4, 0), (0x0, 1), (HEADERS, 3)], "cut {cut}");
            assert!(scan.at_boundary());
        }
        let mut scan = FrameScan::default();
        scan.feed(&bytes[..bytes.len() - 1], |_| {});
        assert!(!scan.at_boundary());
    }

    #[test]
    fn inbound_detects_the_preface_and_the_opened_streams() {
        let ctl = Arc::new(ConnCtl::default());
        let mut inbound = Inbound::Preface(0);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, &[]));
        bytes.extend(frame(HEADERS, 1, b"x"));
        bytes.extend(frame(HEADERS, 5, b"x"));
        // Trailers on stream 1 open nothing.
        bytes.extend(frame(HEADERS, 1, b"x"));
        for piece in bytes.chunks(7) {
            saw_read(&mut inbound, &ctl, piece);
        }
        assert!(matches!(inbound, Inbound::Frames(_)));
        assert_eq!(lock(&ctl.h2).max_opened, 5);
        assert!(ctl.h2_begin_processing());
        assert_eq!(ctl.h2_decide_goaway(), Some(5));
        assert!(
            !ctl.h2_begin_processing(),
            "nothing is delivered after a GOAWAY"
        );
        assert_eq!(ctl.h2_decide_goaway(), None);

        let mut http1 = Inbound::Preface(0);
        saw_read(&mut http1, &ctl, b"PRI * HTTP/1.1\r\n");
        assert!(matches!(http1, Inbound::Other));
    }
}
