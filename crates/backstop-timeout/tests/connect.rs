//! ConnectTimeoutLayer and TcpConnector against real loopback sockets (tokio clock paused: the
//! bounds are checked on tokio's clock, and the tests take milliseconds of real time).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use backstop_chaos::{BlackHole, ChaosServer, ConnectionFault, TlsIdentity, closed_port_addr};
use backstop_classify::{Error, Kind, Phase, Retryable, Timer};
use backstop_timeout::{
    ConnectProgress, ConnectTimeoutLayer, ConnectionIdleTimeoutLayer, OpaqueConnector, TcpConnector,
};
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const BOUND: Duration = Duration::from_secs(2);
/// How late a timer may fire on the paused clock (it auto-advances to the deadline exactly; the
/// slack covers work done before the timer was armed).
const SLACK: Duration = Duration::from_millis(50);

fn assert_connect_timeout(err: &Error, phase: Phase) {
    assert_eq!(err.kind(), Kind::TimedOut(Timer::Connect), "{err:?}");
    assert_eq!(err.phase(), phase, "{err:?}");
    assert_eq!(err.retryable(), Retryable::Safe, "{err:?}");
}

fn assert_within(elapsed: Duration, bound: Duration) {
    assert!(
        elapsed >= bound && elapsed <= bound + SLACK,
        "took {elapsed:?}, expected {bound:?}..{:?}",
        bound + SLACK
    );
}

/// A resolver mapping every name to `addrs`.
fn static_resolver(
    addrs: Vec<SocketAddr>,
) -> impl tower::Service<
    Name,
    Response = std::vec::IntoIter<SocketAddr>,
    Error = std::io::Error,
    Future = impl Future<Output = Result<std::vec::IntoIter<SocketAddr>, std::io::Error>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_name: Name| {
        let addrs = addrs.clone();
        async move { Ok::<_, std::io::Error>(addrs.into_iter()) }
    })
}

#[tokio::test(start_paused = true)]
async fn black_holed_connect_fails_at_the_bound_not_the_os_timeout() {
    let hole = BlackHole::start().await.unwrap();
    let connector = ConnectTimeoutLayer::new(BOUND).layer(TcpConnector::new());
    let wall = std::time::Instant::now();
    let start = Instant::now();
    let uri: Uri = format!("http://{}/", hole.addr()).parse().unwrap();
    let err = connector.oneshot(uri).await.err().unwrap();
    assert_within(start.elapsed(), BOUND);
    assert!(
        wall.elapsed() < Duration::from_secs(10),
        "the OS timeout ran"
    );
    assert_connect_timeout(&err, Phase::Connect);
}

/// A connect future standing in for a TLS connector's: it tells the phase it is stuck in.
struct StuckIn(Phase);

impl Future for StuckIn {
    type Output = Result<hyper_util::rt::TokioIo<tokio::net::TcpStream>, std::io::Error>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Pending
    }
}

impl ConnectProgress for StuckIn {
    fn phase(&self) -> Phase {
        self.0
    }
}

#[tokio::test(start_paused = true)]
async fn the_timeout_reports_the_phase_the_connect_future_is_in() {
    for phase in [Phase::Resolve, Phase::Connect, Phase::Tls] {
        let connector = tower::service_fn(move |_uri: Uri| StuckIn(phase));
        let err = ConnectTimeoutLayer::new(BOUND)
            .layer(connector)
            .oneshot("http://service.test/".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert_connect_timeout(&err, phase);
    }
}

#[tokio::test(start_paused = true)]
async fn an_opaque_connector_is_stuck_in_connect_whatever_it_does() {
    // hyper-rustls over TcpConnector: its boxed future says nothing, so a stalled handshake is
    // attributed to Connect (the facade's own HTTPS connector says Tls).
    let stall = ConnectionFault::TlsStall.start().await.unwrap();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(TlsIdentity::generate().unwrap().client_config().unwrap())
        .https_only()
        .enable_http1()
        .wrap_connector(TcpConnector::new());
    let connector = ConnectTimeoutLayer::new(BOUND).layer(OpaqueConnector::new(https));
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
    let start = Instant::now();
    let uri: Uri = format!("https://{}/", stall.addr()).parse().unwrap();
    let err = client.get(uri).await.unwrap_err();
    assert_within(start.elapsed(), BOUND);
    assert_connect_timeout(Error::find_in(&err).unwrap(), Phase::Connect);
    assert_eq!(stall.connection_count(), 1, "TCP itself connected");

    // hyper-util's HttpConnector with a hanging resolver: Connect too.
    let hanging = service_fn(|_name: Name| {
        std::future::pending::<Result<std::vec::IntoIter<SocketAddr>, std::io::Error>>()
    });
    let http = HttpConnector::new_with_resolver(hanging);
    let connector = ConnectTimeoutLayer::new(BOUND).layer(OpaqueConnector::new(http));
    let start = Instant::now();
    let err = connector
        .oneshot("http://service.test/".parse().unwrap())
        .await
        .err()
        .unwrap();
    assert_within(start.elapsed(), BOUND);
    assert_connect_timeout(&err, Phase::Connect);
}

#[tokio::test(start_paused = true)]
async fn hanging_resolver_fails_at_the_bound_in_phase_resolve() {
    let hanging = service_fn(|_name: Name| {
        std::future::pending::<Result<std::vec::IntoIter<SocketAddr>, std::io::Error>>()
    });
    let connector = ConnectTimeoutLayer::new(BOUND)
        .layer(TcpConnector::builder().resolver(hanging).build().unwrap());
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
    let start = Instant::now();
    let err = client
        .get("http://service.test/".parse().unwrap())
        .await
        .unwrap_err();
    assert_within(start.elapsed(), BOUND);
    assert_connect_timeout(Error::find_in(&err).unwrap(), Phase::Resolve);
}

#[tokio::test(start_paused = true)]
async fn one_black_holed_address_does_not_burn_the_budget() {
    let hole = BlackHole::start().await.unwrap();
    let server = ChaosServer::start().await.unwrap();
    let attempt_timeout = Duration::from_millis(300);

    // Raced: the good address starts after the attempt delay and wins.
    let delay = Duration::from_millis(100);
    let raced = TcpConnector::builder()
        .resolver(static_resolver(vec![hole.addr(), server.addr()]))
        .attempt_timeout(attempt_timeout)
        .attempt_delay(delay)
        .build()
        .unwrap();
    let start = Instant::now();
    let io = ConnectTimeoutLayer::new(BOUND)
        .layer(raced)
        .oneshot(
            format!("http://service.test:{}/", server.addr().port())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_within(start.elapsed(), delay);
    assert_eq!(io.inner().peer_addr().unwrap(), server.addr());

    // One at a time: the black-holed attempt is cut at its own bound, well inside the budget.
    let sequential = TcpConnector::builder()
        .resolver(static_resolver(vec![hole.addr(), server.addr()]))
        .attempt_timeout(attempt_timeout)
        .attempt_delay(attempt_timeout)
        .build()
        .unwrap();
    let start = Instant::now();
    let io = ConnectTimeoutLayer::new(BOUND)
        .layer(sequential)
        .oneshot(
            format!("http://service.test:{}/", server.addr().port())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_within(start.elapsed(), attempt_timeout);
    assert_eq!(io.inner().peer_addr().unwrap(), server.addr());

    // Every address black-holed: the overall bound still holds.
    let all_holes = TcpConnector::builder()
        .resolver(static_resolver(vec![hole.addr(); 20]))
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = ConnectTimeoutLayer::new(BOUND)
        .layer(all_holes)
        .oneshot("http://service.test/".parse().unwrap())
        .await
        .err()
        .unwrap();
    assert_within(start.elapsed(), BOUND);
    assert_connect_timeout(&err, Phase::Connect);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn refused_address_falls_through_to_the_next_at_once() {
    let server = ChaosServer::start().await.unwrap();
    let refused = closed_port_addr().unwrap();
    let connector = TcpConnector::builder()
        .resolver(static_resolver(vec![refused, server.addr()]))
        .build()
        .unwrap();
    let start = Instant::now();
    let io = ConnectTimeoutLayer::new(BOUND)
        .layer(connector)
        .oneshot(
            format!("http://service.test:{}/", server.addr().port())
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(start.elapsed() < SLACK, "waited {:?}", start.elapsed());
    assert_eq!(io.inner().peer_addr().unwrap(), server.addr());

    // Only a refused address: classified, not a timeout.
    let err = ConnectTimeoutLayer::new(BOUND)
        .layer(TcpConnector::new())
        .oneshot(format!("http://{refused}/").parse().unwrap())
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), Kind::Refused);
    assert_eq!(err.phase(), Phase::Connect);
    assert_eq!(err.retryable(), Retryable::Safe);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn normal_connects_are_unaffected() {
    let server = ChaosServer::start().await.unwrap();
    let connector = ServiceBuilder::new()
        .layer(ConnectTimeoutLayer::new(BOUND))
        .layer(ConnectionIdleTimeoutLayer::new(Duration::from_secs(1)))
        .service(TcpConnector::new());
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
    for _ in 0..3 {
        let res = client.get(server.url("/").parse().unwrap()).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok\n");
    }
    assert_eq!(
        server.connection_count(),
        1,
        "the pooled connection was reused"
    );

    // TLS through hyper-rustls, whose future reports no phase.
    let tls_server = ChaosServer::builder().tls(true).start().await.unwrap();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_server.client_tls_config().unwrap().unwrap())
        .https_only()
        .enable_http1()
        .wrap_connector(TcpConnector::new());
    let connector = ServiceBuilder::new()
        .layer(ConnectTimeoutLayer::new(BOUND))
        .layer(ConnectionIdleTimeoutLayer::new(Duration::from_secs(1)))
        .service(OpaqueConnector::new(https));
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
    let res = client
        .get(tls_server.url("/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.shutdown().await;
    tls_server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_tcp_connect_future_tells_its_phase_and_stamps_when_each_ended() {
    let server = ChaosServer::start().await.unwrap();
    let addr = server.addr();
    let slow_dns = service_fn(move |_name: Name| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok::<_, std::io::Error>(vec![addr].into_iter())
    });
    let mut connector = TcpConnector::builder().resolver(slow_dns).build().unwrap();
    let start = Instant::now();
    let uri: Uri = format!("http://service.test:{}/", addr.port())
        .parse()
        .unwrap();
    let mut connecting = std::pin::pin!(connector.ready().await.unwrap().call(uri));
    let first =
        std::future::poll_fn(|cx| std::task::Poll::Ready(connecting.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    assert_eq!(connecting.phase(), Phase::Resolve);
    assert_eq!(
        connecting.stamps(),
        backstop_timeout::PhaseStamps::default()
    );
    let io = connecting.as_mut().await.unwrap();
    assert_eq!(io.inner().peer_addr().unwrap(), addr);
    assert_eq!(connecting.phase(), Phase::Connect);
    let stamps = connecting.stamps();
    let (Some(resolved), Some(connected)) = (stamps.resolved, stamps.connected) else {
        panic!("both ends stamped: {stamps:?}");
    };
    assert_eq!(resolved - start, Duration::from_millis(30));
    assert!(resolved <= connected, "{stamps:?}");

    // An IP address is not resolved: no resolve stamp, straight to Connect.
    let mut connecting =
        std::pin::pin!(TcpConnector::new().call(format!("http://{addr}/").parse().unwrap()));
    assert_eq!(connecting.phase(), Phase::Connect);
    connecting.as_mut().await.unwrap();
    assert_eq!(connecting.stamps().resolved, None);
    assert!(connecting.stamps().connected.is_some());
    server.shutdown().await;
}
