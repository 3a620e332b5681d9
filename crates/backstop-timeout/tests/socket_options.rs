//! `TcpConnector`'s socket options: each one set is really on the connected socket (read back
//! with socket2 from the stream the connector returns), the local address is the one the server
//! sees, and every out-of-range value is refused at build with its field named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use backstop_timeout::TcpConnector;
use hyper_util::rt::TokioIo;
use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// A loopback listener, and a connection made to it through `connector`, with the peer address
/// the listener saw.
async fn connect_through<R>(connector: TcpConnector<R>) -> (TokioIo<TcpStream>, SocketAddr)
where
    TcpConnector<R>:
        tower::Service<http::Uri, Response = TokioIo<TcpStream>, Error = backstop_classify::Error>,
    <TcpConnector<R> as tower::Service<http::Uri>>::Future: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let (connected, accepted) = tokio::join!(connector.oneshot(uri), listener.accept());
    let (_server_side, peer) = accepted.unwrap();
    (connected.unwrap(), peer)
}

#[tokio::test]
async fn by_default_no_option_is_touched() {
    let (io, _) = connect_through(TcpConnector::new()).await;
    let sock = SockRef::from(io.inner());
    assert!(!sock.keepalive().unwrap(), "keep-alive stays off");
    assert!(sock.tcp_nodelay().unwrap(), "TCP_NODELAY is on by default");
}

#[tokio::test]
async fn keepalive_time_interval_and_retries_are_set() {
    let connector = TcpConnector::builder()
        .keepalive(Duration::from_secs(17))
        .keepalive_interval(Duration::from_secs(3))
        .keepalive_retries(4)
        .nodelay(false)
        .build()
        .unwrap();
    let (io, _) = connect_through(connector).await;
    let sock = SockRef::from(io.inner());
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(17));
    assert_eq!(
        sock.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(3)
    );
    assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
    assert!(!sock.tcp_nodelay().unwrap(), "nodelay(false) is honoured");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn tcp_user_timeout_and_buffer_sizes_are_set() {
    let connector = TcpConnector::builder()
        .tcp_user_timeout(Duration::from_millis(12_345))
        .send_buffer_size(64 * 1024)
        .recv_buffer_size(96 * 1024)
        .build()
        .unwrap();
    let (io, _) = connect_through(connector).await;
    let sock = SockRef::from(io.inner());
    assert_eq!(
        sock.tcp_user_timeout().unwrap(),
        Some(Duration::from_millis(12_345))
    );
    // Linux doubles the requested size for its bookkeeping.
    assert_eq!(sock.send_buffer_size().unwrap(), 128 * 1024);
    assert_eq!(sock.recv_buffer_size().unwrap(), 192 * 1024);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn interface_binds_the_device() {
    let connector = TcpConnector::builder().interface("lo").build().unwrap();
    let (io, _) = connect_through(connector).await;
    let sock = SockRef::from(io.inner());
    assert_eq!(sock.device().unwrap().as_deref(), Some(&b"lo"[..]));
}

/// Linux's loopback answers on all of 127.0.0.0/8, so the connector can connect from 127.0.0.2
/// to a listener on 127.0.0.1: the listener must see 127.0.0.2.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn local_address_is_the_peer_address_the_server_sees() {
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let connector = TcpConnector::builder().local_address(from).build().unwrap();
    let (io, peer) = connect_through(connector).await;
    assert_eq!(peer.ip(), from);
    assert_eq!(io.inner().local_addr().unwrap().ip(), from);

    // An IPv6 local address only: an IPv4 destination is connected from wherever the system
    // routes it, not refused.
    let connector = TcpConnector::builder()
        .local_address(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST))
        .build()
        .unwrap();
    let (_, peer) = connect_through(connector).await;
    assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn out_of_range_options_are_refused_with_the_field_named() {
    let field = |builder: backstop_timeout::TcpConnectorBuilder<_>| {
        builder.build().unwrap_err().field().to_owned()
    };
    let b = TcpConnector::builder;
    assert_eq!(
        field(b().keepalive(Duration::from_millis(500))),
        "keepalive"
    );
    assert_eq!(
        field(b().keepalive(Duration::from_secs(40_000))),
        "keepalive"
    );
    assert_eq!(
        field(b().keepalive_interval(Duration::from_secs(5))),
        "keepalive_interval",
        "an interval without keep-alive"
    );
    assert_eq!(
        field(
            b().keepalive(Duration::from_secs(5))
                .keepalive_interval(Duration::ZERO)
        ),
        "keepalive_interval"
    );
    assert_eq!(field(b().keepalive_retries(3)), "keepalive_retries");
    assert_eq!(
        field(b().keepalive(Duration::from_secs(5)).keepalive_retries(0)),
        "keepalive_retries"
    );
    assert_eq!(
        field(b().keepalive(Duration::from_secs(5)).keepalive_retries(128)),
        "keepalive_retries"
    );
    assert_eq!(field(b().send_buffer_size(0)), "send_buffer_size");
    assert_eq!(field(b().recv_buffer_size(usize::MAX)), "recv_buffer_size");
    #[cfg(target_os = "linux")]
    {
        assert_eq!(
            field(b().tcp_user_timeout(Duration::ZERO)),
            "tcp_user_timeout"
        );
        assert_eq!(
            field(b().tcp_user_timeout(Duration::from_secs(2 * 86_400))),
            "tcp_user_timeout"
        );
        assert_eq!(field(b().interface("")), "interface");
        assert_eq!(
            field(b().interface("a-name-too-long-for-linux")),
            "interface"
        );
    }
    // The bounds themselves are accepted.
    b().keepalive(Duration::from_secs(1))
        .keepalive_interval(Duration::from_secs(32_767))
        .keepalive_retries(127)
        .send_buffer_size(1)
        .build()
        .unwrap();
}
