//! Connection-level faults: listeners that misbehave before any request.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::server::bind_reuse;

/// A fault that happens at the connection level, so it needs a listener of
/// its own (no request is ever read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionFault {
    /// Accept the TCP connection, then reset it immediately (`SO_LINGER` 0 +
    /// close). The client sees `ECONNRESET` when it writes or reads.
    AcceptThenReset,
    /// Accept the TCP connection, read the TLS ClientHello (or whatever the
    /// client sends) and never answer. A TLS handshake never completes; a
    /// plain HTTP client waits forever for a response.
    TlsStall,
    /// A listener whose accept queue is full (see [`BlackHole`]): new SYNs
    /// are dropped, so `connect()` hangs until the client's own timeout.
    BlackHole,
    /// An address where nothing listens: `connect()` fails at once with
    /// `ECONNREFUSED` (see [`closed_port_addr`]).
    Refuse,
}

impl ConnectionFault {
    /// All connection-level faults.
    pub const ALL: [ConnectionFault; 4] = [
        ConnectionFault::AcceptThenReset,
        ConnectionFault::TlsStall,
        ConnectionFault::BlackHole,
        ConnectionFault::Refuse,
    ];

    /// Kebab-case name: `accept-then-reset`, `tls-stall`, `black-hole`,
    /// `refuse`.
    pub fn name(&self) -> &'static str {
        match self {
            ConnectionFault::AcceptThenReset => "accept-then-reset",
            ConnectionFault::TlsStall => "tls-stall",
            ConnectionFault::BlackHole => "black-hole",
            ConnectionFault::Refuse => "refuse",
        }
    }

    /// Starts a listener with this behaviour on an ephemeral `127.0.0.1`
    /// port.
    pub async fn start(self) -> io::Result<FaultListener> {
        let connections = Arc::new(AtomicU64::new(0));
        let (addr, task, black_hole) = match self {
            ConnectionFault::AcceptThenReset | ConnectionFault::TlsStall => {
                let listener = bind_reuse(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
                let addr = listener.local_addr()?;
                let task = tokio::spawn(fault_accept_loop(listener, self, connections.clone()));
                (addr, Some(task), None)
            }
            ConnectionFault::BlackHole => {
                let bh = BlackHole::start().await?;
                (bh.addr(), None, Some(bh))
            }
            ConnectionFault::Refuse => (closed_port_addr()?, None, None),
        };
        Ok(FaultListener {
            fault: self,
            addr,
            connections,
            task,
            _black_hole: black_hole,
        })
    }
}

/// A running [`ConnectionFault`] listener. Dropping it stops the listener
/// and closes every connection it holds.
#[derive(Debug)]
pub struct FaultListener {
    fault: ConnectionFault,
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
    _black_hole: Option<BlackHole>,
}

impl FaultListener {
    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The behaviour of this listener.
    pub fn fault(&self) -> ConnectionFault {
        self.fault
    }

    /// Connections accepted so far (always 0 for `BlackHole` and `Refuse`).
    pub fn connection_count(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops the listener and waits until its connections are closed.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for FaultListener {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn fault_accept_loop(
    listener: TcpListener,
    fault: ConnectionFault,
    connections: Arc<AtomicU64>,
) {
    let mut held = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    connections.fetch_add(1, Ordering::Relaxed);
                    match fault {
                        ConnectionFault::TlsStall => {
                            held.spawn(stall(stream));
                        }
                        _ => reset(stream),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = held.join_next(), if !held.is_empty() => {}
        }
    }
}

fn reset(stream: TcpStream) {
    if let Err(e) = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
        tracing::warn!(error = %e, "SO_LINGER failed; closing without RST");
    }
    drop(stream);
}

/// Reads (and discards) whatever the client sends, never writes, and keeps
/// the connection open until the client closes it.
async fn stall(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// A loopback address whose `connect()` hangs: a listener with backlog 0
/// whose accept queue the black hole fills itself (and never accepts), so the
/// kernel drops further SYNs.
///
/// [`BlackHole::start`] verifies the effect: it keeps opening connections
/// until one does not complete within 100 ms (real time).
#[derive(Debug)]
pub struct BlackHole {
    addr: SocketAddr,
    _listener: StdTcpListener,
    _fillers: Vec<StdTcpStream>,
}

impl BlackHole {
    /// How many filler connections [`BlackHole::start`] tries before giving
    /// up.
    const MAX_FILLERS: usize = 16;

    /// Binds the listener on an ephemeral `127.0.0.1` port and fills its
    /// queue. Takes about 100 ms of real time (the verification probe).
    ///
    /// Fails with `Other` if the queue cannot be filled on this system.
    pub async fn start() -> io::Result<BlackHole> {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .map_err(io::Error::other)?
    }

    fn start_blocking() -> io::Result<BlackHole> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.bind(&addr.into())?;
        socket.listen(0)?;
        let listener: StdTcpListener = socket.into();
        let addr = listener.local_addr()?;
        let mut fillers = Vec::new();
        for _ in 0..Self::MAX_FILLERS {
            match StdTcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                Ok(s) => fillers.push(s),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
                {
                    tracing::debug!(%addr, fillers = fillers.len(), "black hole ready");
                    return Ok(BlackHole {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "black hole: accept queue still accepting after {} connections",
            Self::MAX_FILLERS
        )))
    }

    /// The address whose `connect()` hangs.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// An address on `127.0.0.1` where nothing listens (an ephemeral port that
/// was bound and released), so `connect()` is refused. Another process could
/// in principle grab the port later; on a test machine that is unlikely.
pub fn closed_port_addr() -> io::Result<SocketAddr> {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.local_addr()
}
