//! The server's connections: the accept loop (with the down / up commands), each connection's
//! hyper service, and what happens to the raw stream when a fault takes the connection over
//! (reset, close, garbage, GOAWAY). Separate from the per-request fault handling, which only asks
//! for these actions, and from the public server handle.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsAcceptor;

use super::delivery::Shared;
use super::handle::handle;
use super::{Cmd, GARBAGE};
use crate::io::{Action, ChaosIo, ConnCtl, Stream};

/// What every connection task needs.
pub(super) struct ConnCtx {
    pub(super) shared: Arc<Shared>,
    pub(super) tls: Option<TlsAcceptor>,
}

/// Binds a tokio listener with `SO_REUSEADDR` (so the port can be re-bound
/// while old connections sit in `TIME_WAIT`).
pub(crate) fn bind_reuse(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

enum Event {
    Accepted(io::Result<TcpStream>),
    Command(Option<Cmd>),
    Joined,
    Rebind,
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    ctx: Arc<ConnCtx>,
    mut cmds: mpsc::Receiver<Cmd>,
) {
    let mut listener = Some(listener);
    let mut conns = JoinSet::new();
    let mut up_at: Option<Instant> = None;
    loop {
        let event = match &listener {
            Some(l) => tokio::select! {
                r = l.accept() => Event::Accepted(r.map(|(s, _)| s)),
                Some(_) = conns.join_next(), if !conns.is_empty() => Event::Joined,
                c = cmds.recv() => Event::Command(c),
            },
            None => tokio::select! {
                () = tokio::time::sleep_until(up_at.unwrap_or_else(Instant::now)), if up_at.is_some() => Event::Rebind,
                Some(_) = conns.join_next(), if !conns.is_empty() => Event::Joined,
                c = cmds.recv() => Event::Command(c),
            },
        };
        match event {
            Event::Accepted(Ok(stream)) => {
                ctx.shared.connections.fetch_add(1, Ordering::Relaxed);
                conns.spawn(serve_conn(stream, ctx.clone()));
            }
            Event::Accepted(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Event::Joined => {}
            Event::Command(None) => return,
            Event::Command(Some(Cmd::Down { up_after, ack })) => {
                listener = None;
                conns.abort_all();
                up_at = up_after.map(|d| Instant::now() + d);
                tracing::debug!(%addr, ?up_after, "chaos server down");
                let _ = ack.send(());
            }
            Event::Command(Some(Cmd::Up { ack })) => {
                let result = if listener.is_some() {
                    Ok(())
                } else {
                    bind_reuse(addr).map(|l| {
                        listener = Some(l);
                        up_at = None;
                        tracing::debug!(%addr, "chaos server up");
                    })
                };
                let _ = ack.send(result);
            }
            Event::Rebind => match bind_reuse(addr) {
                Ok(l) => {
                    listener = Some(l);
                    up_at = None;
                    tracing::debug!(%addr, "chaos server up");
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "re-bind failed, retrying");
                    up_at = Some(Instant::now() + Duration::from_millis(50));
                }
            },
        }
    }
}

async fn serve_conn(tcp: TcpStream, ctx: Arc<ConnCtx>) {
    let _ = tcp.set_nodelay(true);
    let stream = match &ctx.tls {
        None => Stream::Plain(tcp),
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(s) => Stream::Tls(Box::new(s)),
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
        },
    };
    let ctl = Arc::new(ConnCtl::default());
    let io = TokioIo::new(ChaosIo::new(stream, ctl.clone()));
    let shared = ctx.shared.clone();
    let svc_ctl = ctl.clone();
    let svc = service_fn(move |req| handle(req, shared.clone(), svc_ctl.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    {
        let conn = builder.serve_connection(io, svc);
        tokio::pin!(conn);
        let mut graceful = false;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with error");
                    }
                    break;
                }
                () = ctl.notify.notified() => {
                    if ctl.action().is_some() {
                        break;
                    }
                    if ctl.graceful_wanted() && !graceful {
                        graceful = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    if graceful {
                        ctl.graceful_started();
                    }
                }
            }
        }
    }
    // The hyper connection (and with it the IO) is dropped here; if a handler
    // asked for an action, the IO handed the raw stream back.
    let (Some(action), Some(mut stream)) = (ctl.action(), ctl.take_stream()) else {
        return;
    };
    match action {
        Action::Reset => {
            if let Err(e) = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO)) {
                tracing::warn!(error = %e, "SO_LINGER failed; closing without RST");
            }
            drop(stream);
        }
        Action::Close => {
            let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
        }
        Action::Garbage => {
            let _ = timeout(Duration::from_secs(1), async {
                stream.write_all(GARBAGE).await?;
                stream.shutdown().await
            })
            .await;
        }
        Action::GoAway { last_stream_id } => {
            if !ctl.write_at_boundary() {
                // hyper was cut off in the middle of a frame; a frame of ours would be read as
                // the rest of it. Closing says less but nothing false.
                tracing::warn!("GOAWAY fault: the connection was mid-frame; closing instead");
                let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
                return;
            }
            let _ = timeout(Duration::from_secs(1), async {
                stream.write_all(&goaway_frame(last_stream_id)).await?;
                stream.flush().await?;
                stream.shutdown().await
            })
            .await;
            // Read until the client closes, as a server that sent GOAWAY does: closing with its
            // bytes unread would reset the connection, and the reset could overtake the GOAWAY.
            let _ = timeout(Duration::from_secs(1), async {
                let mut scratch = [0u8; 4096];
                while matches!(stream.read(&mut scratch).await, Ok(n) if n > 0) {}
            })
            .await;
        }
    }
}

/// An HTTP/2 `GOAWAY` frame (RFC 9113 §6.8) with error code `NO_ERROR`.
fn goaway_frame(last_stream_id: u32) -> [u8; 17] {
    let mut frame = [0u8; 17];
    // Length 8, type 0x7, no flags, stream 0.
    frame[..9].copy_from_slice(&[0, 0, 8, 0x7, 0, 0, 0, 0, 0]);
    frame[9..13].copy_from_slice(&(last_stream_id & 0x7fff_ffff).to_be_bytes());
    // Error code NO_ERROR (0): bytes 13..17 stay zero.
    frame
}
