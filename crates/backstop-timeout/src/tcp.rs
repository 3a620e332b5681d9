//! [`TcpConnector`]: a TCP connector that bounds each address attempt and races addresses
//! happy-eyeballs style, with an injectable resolver.

use std::future::{Future, poll_fn};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::{BoxError, Error, Kind, Phase};
use http::Uri;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_service::Service;

use crate::config::{ConfigError, MAX_CONNECT_TIMEOUT, MIN_TIMEOUT, check_duration};
use crate::progress::{ConnectProgress, PhaseStamps};
use crate::race::{Attempts, interleave_families};
use crate::socket::SocketOptions;

/// RFC 8305's recommended "connection attempt delay".
pub const DEFAULT_ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// The default bound of one address attempt when more addresses are left to try.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP connector for hyper-util's client that never lets one bad address burn the whole
/// connect budget.
///
/// - The host is resolved with the resolver you give it (a `Service<Name>` yielding socket
///   addresses, as hyper-util's `HttpConnector` takes; [`GaiResolver`] by default). IP literals
///   are not resolved. An address with port 0 gets the URI's port; a resolver that knows the
///   port (service discovery) may return it instead.
/// - Addresses are interleaved by family (RFC 8305 §4) and raced: when an attempt has not
///   succeeded after the *attempt delay* the next one starts alongside it; a failed attempt starts
///   the next at once; the first to connect wins and the others are dropped.
/// - Each attempt but the last is bounded by the *attempt timeout*; the last address keeps the
///   rest of the overall budget, which a [`ConnectTimeoutLayer`](crate::ConnectTimeoutLayer)
///   around this connector enforces.
/// - Its future, [`TcpConnecting`], tells its phase ([`Phase::Resolve`], then
///   [`Phase::Connect`]) and when each ended ([`ConnectProgress`]) to the layers around it.
/// - Failures are [`backstop_classify::Error`]s: resolver failures in [`Phase::Resolve`], socket
///   failures in [`Phase::Connect`]; the error of the last attempt is returned.
///
/// Responses are `TokioIo<TcpStream>` with `TCP_NODELAY` set (configurable). The builder sets
/// the socket options `HttpConnector` users expect, under the same names: TCP keep-alive
/// ([`keepalive`](TcpConnectorBuilder::keepalive), its interval and retries), the local address
/// to connect from ([`local_address`](TcpConnectorBuilder::local_address)), the device
/// (`interface`, Linux), `TCP_USER_TIMEOUT` (`tcp_user_timeout`, Linux) and the buffer sizes;
/// every one unset by default, each checked by [`build`](TcpConnectorBuilder::build).
#[derive(Debug, Clone)]
pub struct TcpConnector<R = GaiResolver> {
    resolver: R,
    attempt_timeout: Duration,
    attempt_delay: Duration,
    nodelay: bool,
    /// `None` when every option is unset: a connect then allocates nothing for them.
    options: Option<Arc<SocketOptions>>,
}

impl TcpConnector<GaiResolver> {
    /// A connector with the system resolver and the default attempt timeout (2 s) and delay
    /// (250 ms).
    pub fn new() -> Self {
        TcpConnector {
            resolver: GaiResolver::new(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            attempt_delay: DEFAULT_ATTEMPT_DELAY,
            nodelay: true,
            options: None,
        }
    }

    /// A builder, starting from the defaults.
    pub fn builder() -> TcpConnectorBuilder<GaiResolver> {
        TcpConnectorBuilder {
            resolver: GaiResolver::new(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            attempt_delay: DEFAULT_ATTEMPT_DELAY,
            nodelay: true,
            options: SocketOptions::default(),
        }
    }
}

impl Default for TcpConnector<GaiResolver> {
    fn default() -> Self {
        TcpConnector::new()
    }
}

/// Builds a [`TcpConnector`]; [`build`](TcpConnectorBuilder::build) checks the settings.
#[derive(Debug, Clone)]
pub struct TcpConnectorBuilder<R> {
    resolver: R,
    attempt_timeout: Duration,
    attempt_delay: Duration,
    nodelay: bool,
    options: SocketOptions,
}

impl<R> TcpConnectorBuilder<R> {
    /// Resolves names with `resolver` (e.g. a test resolver, or hickory behind a
    /// `Service<Name>`).
    pub fn resolver<R2>(self, resolver: R2) -> TcpConnectorBuilder<R2> {
        TcpConnectorBuilder {
            resolver,
            attempt_timeout: self.attempt_timeout,
            attempt_delay: self.attempt_delay,
            nodelay: self.nodelay,
            options: self.options,
        }
    }

    /// Bounds each address attempt while other addresses remain ([`MIN_TIMEOUT`] to
    /// [`MAX_CONNECT_TIMEOUT`]).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// How long an attempt runs alone before the next address is tried alongside it
    /// ([`MIN_TIMEOUT`] to the attempt timeout; RFC 8305 recommends 250 ms).
    pub fn attempt_delay(mut self, delay: Duration) -> Self {
        self.attempt_delay = delay;
        self
    }

    /// Sets `TCP_NODELAY` on connected sockets (default `true`).
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Turns TCP keep-alive on: the first probe after `idle` without traffic (1 s to
    /// [`MAX_KEEPALIVE`](crate::MAX_KEEPALIVE); the kernel counts whole seconds). Default off.
    /// hyper-util's `HttpConnector::set_keepalive`, reqwest's `tcp_keepalive`.
    pub fn keepalive(mut self, idle: Duration) -> Self {
        self.options.keepalive = Some(idle);
        self
    }

    /// The time between keep-alive probes (1 s to [`MAX_KEEPALIVE`](crate::MAX_KEEPALIVE)); needs
    /// [`keepalive`](Self::keepalive). Default: the system's (75 s on Linux).
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.options.keepalive_interval = Some(interval);
        self
    }

    /// Unanswered keep-alive probes before the connection is dropped (1 to
    /// [`MAX_KEEPALIVE_RETRIES`](crate::MAX_KEEPALIVE_RETRIES)); needs
    /// [`keepalive`](Self::keepalive). Default: the system's (9 on Linux).
    pub fn keepalive_retries(mut self, retries: u32) -> Self {
        self.options.keepalive_retries = Some(retries);
        self
    }

    /// Connects from `ip` (bound with port 0 before connecting): destinations of its family
    /// only, the other family connects from wherever the system routes it. Default: unbound.
    /// A second call replaces the address of the same family.
    pub fn local_address(mut self, ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => self.options.local_v4 = Some(v4),
            IpAddr::V6(v6) => self.options.local_v6 = Some(v6),
        }
        self
    }

    /// Connects from `v4` to IPv4 destinations and from `v6` to IPv6 ones (hyper-util's
    /// `set_local_addresses`).
    pub fn local_addresses(mut self, v4: Ipv4Addr, v6: Ipv6Addr) -> Self {
        self.options.local_v4 = Some(v4);
        self.options.local_v6 = Some(v6);
        self
    }

    /// Binds every socket to the network device `name` (`SO_BINDTODEVICE`, Linux only; 1 to 15
    /// bytes). Binding needs `CAP_NET_RAW` on kernels before 5.7: without it the connect fails
    /// with the permission error. Default: any device.
    #[cfg(target_os = "linux")]
    pub fn interface(mut self, name: impl Into<String>) -> Self {
        self.options.interface = Some(name.into());
        self
    }

    /// `TCP_USER_TIMEOUT` (Linux only): how long sent data may stay unacknowledged before the
    /// kernel drops the connection ([`MIN_TIMEOUT`] to [`MAX_IDLE_TIMEOUT`](crate::MAX_IDLE_TIMEOUT)).
    /// It catches a peer gone silent while a request is being written, which keep-alive probes
    /// (sent only on an idle connection) do not. Default: the system's.
    #[cfg(target_os = "linux")]
    pub fn tcp_user_timeout(mut self, timeout: Duration) -> Self {
        self.options.tcp_user_timeout = Some(timeout);
        self
    }

    /// `SO_SNDBUF`, in bytes (at least 1; the kernel doubles and clamps it). Default: the system's.
    pub fn send_buffer_size(mut self, bytes: usize) -> Self {
        self.options.send_buffer_size = Some(bytes);
        self
    }

    /// `SO_RCVBUF`, in bytes (at least 1; the kernel doubles and clamps it). Default: the system's.
    pub fn recv_buffer_size(mut self, bytes: usize) -> Self {
        self.options.recv_buffer_size = Some(bytes);
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<TcpConnector<R>, ConfigError> {
        let attempt_timeout = check_duration(
            "attempt_timeout",
            self.attempt_timeout,
            MIN_TIMEOUT,
            MAX_CONNECT_TIMEOUT,
        )?;
        let attempt_delay = check_duration(
            "attempt_delay",
            self.attempt_delay,
            MIN_TIMEOUT,
            attempt_timeout,
        )
        .map_err(|_| {
            ConfigError::new(
                "attempt_delay",
                format!(
                    "must be between 1ms and attempt_timeout ({attempt_timeout:?}), got {:?}",
                    self.attempt_delay
                ),
            )
        })?;
        self.options.validate()?;
        let options = (self.options != SocketOptions::default()).then(|| Arc::new(self.options));
        Ok(TcpConnector {
            resolver: self.resolver,
            attempt_timeout,
            attempt_delay,
            nodelay: self.nodelay,
            options,
        })
    }
}

impl<R> Service<Uri> for TcpConnector<R>
where
    R: Service<Name> + Clone + Send + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send,
{
    type Response = TokioIo<TcpStream>;
    type Error = Error;
    type Future = TcpConnecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the resolver is awaited inside the connect, so it counts against the
        // connect bound.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let attempts = Attempts {
            timeout: self.attempt_timeout,
            delay: self.attempt_delay,
            options: self.options.clone(),
        };
        let state = match destination(&dst) {
            Err(err) => State::Failed(Some(err)),
            Ok((Destination::Ip(addr), _)) => {
                State::Connecting(Box::pin(attempts.race(vec![addr])))
            }
            Ok((Destination::Name(host), port)) => {
                let resolver = self.resolver.clone();
                State::Resolving(Box::pin(resolve(resolver, host, port)), attempts)
            }
        };
        TcpConnecting {
            state,
            nodelay: self.nodelay,
            stamps: PhaseStamps::default(),
            ended_in: Phase::Connect,
        }
    }
}

type ResolveFuture = Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, Error>> + Send>>;
type RaceFuture = Pin<Box<dyn Future<Output = Result<TcpStream, Error>> + Send>>;

/// The future of [`TcpConnector`]: resolves, then races the addresses; tells its phase and the
/// moment each phase ended ([`ConnectProgress`]).
pub struct TcpConnecting {
    state: State,
    nodelay: bool,
    stamps: PhaseStamps,
    /// The phase the connect was in when it ended (read once it is `Done`).
    ended_in: Phase,
}

enum State {
    Resolving(ResolveFuture, Attempts),
    Connecting(RaceFuture),
    Failed(Option<Error>),
    Done,
}

impl std::fmt::Debug for TcpConnecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnecting")
            .field("phase", &self.phase())
            .field("stamps", &self.stamps)
            .finish_non_exhaustive()
    }
}

impl Future for TcpConnecting {
    type Output = Result<TokioIo<TcpStream>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the inner futures are boxed).
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Resolving(resolving, attempts) => {
                    let addrs = match resolving.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(addrs)) => addrs,
                        Poll::Ready(Err(err)) => {
                            this.state = State::Done;
                            this.ended_in = Phase::Resolve;
                            return Poll::Ready(Err(err));
                        }
                    };
                    this.stamps.resolved = Some(Instant::now());
                    this.state = State::Connecting(Box::pin(attempts.clone().race(addrs)));
                }
                State::Connecting(racing) => {
                    let stream = match racing.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => result,
                    };
                    this.state = State::Done;
                    let stream = stream?;
                    // Stamped before anything else runs: a TLS handshake wrapping this connector
                    // starts right after, often in the same poll.
                    this.stamps.connected = Some(Instant::now());
                    if this.nodelay {
                        stream
                            .set_nodelay(true)
                            .map_err(|err| Error::from_io(err, Phase::Connect))?;
                    }
                    return Poll::Ready(Ok(TokioIo::new(stream)));
                }
                State::Failed(err) => {
                    let err = err
                        .take()
                        .unwrap_or_else(|| invalid("connect polled after it failed"));
                    this.state = State::Done;
                    this.ended_in = Phase::Local;
                    return Poll::Ready(Err(err));
                }
                State::Done => {
                    return Poll::Ready(Err(invalid("connect polled after it completed")));
                }
            }
        }
    }
}

impl ConnectProgress for TcpConnecting {
    fn phase(&self) -> Phase {
        match self.state {
            State::Resolving(..) => Phase::Resolve,
            State::Failed(_) => Phase::Local,
            State::Connecting(_) => Phase::Connect,
            State::Done => self.ended_in,
        }
    }

    fn stamps(&self) -> PhaseStamps {
        self.stamps
    }
}

/// A URI the connector cannot connect to (no host, or a host that is not a valid name).
#[derive(Debug)]
struct InvalidDestination(&'static str);

impl std::fmt::Display for InvalidDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidDestination {}

pub(crate) fn invalid(why: &'static str) -> Error {
    Error::new(Kind::Other, Phase::Local).with_source(InvalidDestination(why))
}

/// Where to connect: an IP address as it is, or a name to resolve.
enum Destination {
    Ip(SocketAddr),
    Name(Name),
}

/// The destination of `dst` and its port (the scheme's when the URI names none).
fn destination(dst: &Uri) -> Result<(Destination, u16), Error> {
    let host = dst
        .host()
        .ok_or_else(|| invalid("destination URI has no host"))?;
    let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = IpAddr::from_str(literal) {
        return Ok((Destination::Ip(SocketAddr::new(ip, port)), port));
    }
    let name = Name::from_str(host).map_err(|_| invalid("destination host is not a valid name"))?;
    Ok((Destination::Name(name), port))
}

async fn resolve<R>(mut resolver: R, name: Name, port: u16) -> Result<Vec<SocketAddr>, Error>
where
    R: Service<Name>,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
{
    poll_fn(|cx| resolver.poll_ready(cx))
        .await
        .map_err(|err| Error::classify(err, Phase::Resolve))?;
    let addrs = resolver
        .call(name)
        .await
        .map_err(|err| Error::classify(err, Phase::Resolve))?;
    // A resolver that knows the port (service discovery) may say so; port 0 means the URI's.
    let addrs = interleave_families(addrs.map(|addr| match addr.port() {
        0 => SocketAddr::new(addr.ip(), port),
        _ => addr,
    }));
    if addrs.is_empty() {
        return Err(Error::new(Kind::DnsNotFound, Phase::Resolve)
            .with_source(InvalidDestination("the resolver returned no address")));
    }
    Ok(addrs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn attempt_delay_longer_than_attempt_timeout_is_rejected() {
        let err = TcpConnector::builder()
            .attempt_timeout(Duration::from_millis(100))
            .attempt_delay(Duration::from_millis(200))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "attempt_delay");
        let err = TcpConnector::builder()
            .attempt_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "attempt_timeout");
    }
}
