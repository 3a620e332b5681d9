//! What the facade's benches share: the loopback upstream they measure against.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Connections each client's pool holds before anything is measured: more than the 32 tasks
/// the benches run at once. hyper-util's pool removes a host's idle list from its map whenever
/// the list empties and hashes the host in again when a connection comes back; with exactly as
/// many connections as tasks that happens on nearly every request (≈ 1.4 k instructions each),
/// with one more, never. How many connections a first concurrent round happens to open would
/// decide which, so [`open_connections`] decides it, the same for every client.
pub(crate) const POOLED_CONNECTIONS: usize = 40;

/// How many newly accepted connections the upstream holds, unserved, before serving them all
/// (0: none, every connection served at once). Set by [`open_connections`].
static GATHER: AtomicUsize = AtomicUsize::new(0);

/// Opens [`POOLED_CONNECTIONS`] connections in a client's pool: `get` is called that many times
/// at once while the upstream holds the new connections unanswered until all have arrived, so
/// no request can reuse another's connection. `get` sends one GET through the client (and
/// reads its body). Call it while the client's pool is empty.
pub(crate) async fn open_connections<F, Fut>(get: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    GATHER.store(POOLED_CONNECTIONS, Ordering::SeqCst);
    let requests: Vec<_> = (0..POOLED_CONNECTIONS)
        .map(|_| tokio::spawn(get()))
        .collect();
    for request in requests {
        request.await.unwrap();
    }
}

/// A hyper server on 127.0.0.1 answering every request with `200 ok`, as cheaply as it can, so
/// the client side dominates what is measured. Only how connections are accepted knows about
/// [`open_connections`]: the service every request goes through is the same either way.
pub(crate) async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            // While gathering, a pause of 5 s without a new connection serves what is
            // held (a client that reused a connection would otherwise wait for ever).
            let accepted = if !held.is_empty() {
                tokio::time::timeout(Duration::from_secs(5), listener.accept()).await
            } else {
                Ok(listener.accept().await)
            };
            // Read after the accept: a gather starts while this loop waits in an accept, and
            // the connection that wakes it is the gather's first.
            let gather = GATHER.load(Ordering::SeqCst);
            match accepted {
                Ok(Ok((stream, _))) => {
                    let _ = stream.set_nodelay(true);
                    if gather == 0 {
                        serve(stream);
                        continue;
                    }
                    held.push(stream);
                    if held.len() < gather {
                        continue;
                    }
                }
                Ok(Err(_)) => continue,
                Err(_elapsed) => {}
            }
            GATHER.store(0, Ordering::SeqCst);
            held.drain(..).for_each(serve);
        }
    });
    addr
}

fn serve(stream: tokio::net::TcpStream) {
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    });
}

/// backstop's connector chain with the client's defaults (the connect and connection idle
/// timeouts of `Policy::default()`, its TCP connector with `TCP_NODELAY`), TLS and timings left
/// out.
pub(crate) type BackstopConnector = backstop_timeout::ConnectTimeout<
    backstop_timeout::IdleConnector<backstop_timeout::TcpConnector>,
>;

/// A [`BackstopConnector`].
pub(crate) fn backstop_connector() -> BackstopConnector {
    let defaults = backstop::Policy::default();
    tower::ServiceBuilder::new()
        .layer(backstop_timeout::ConnectTimeoutLayer::new(
            defaults.connect_timeout,
        ))
        .layer(backstop_timeout::ConnectionIdleTimeoutLayer::new(
            defaults.idle_timeout,
        ))
        .service(backstop_timeout::TcpConnector::new())
}

/// The `p` quantile (0 to 1) of `sorted`: the nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
