//! A server on a loopback port, for the tests of this crate.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use backstop_server::{IncomingBody, ServeConfig, ServeSummary, Server, ServerStats};
use bytes::Bytes;
use http::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// A server serving on 127.0.0.1 until [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub stats: ServerStats,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<ServeSummary>>,
}

impl Running {
    /// Signals shutdown and waits (bounded) for the summary.
    pub async fn stop(mut self) -> ServeSummary {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops within the drain timeout")
            .unwrap()
            .unwrap()
    }
}

/// Serves `service` with `config` on a free loopback port.
pub async fn start<S, B>(config: ServeConfig, service: S) -> Running
where
    S: tower::Service<Request<IncomingBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<backstop_server::BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<backstop_server::BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(listener, config);
    let stats = server.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve_with_shutdown(service, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stats,
        stop: Some(stop),
        task,
    }
}
