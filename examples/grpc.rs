//! A tonic client under backstop's layers, with gRPC's per-method retry policy (gRFC A6), against
//! a tonic server on loopback that fails before it succeeds.
//!
//! `cargo run --example grpc`: three calls, each printed with what the server saw.
//! - `Cart/Get`, listed in the policy (UNAVAILABLE, 3 attempts): UNAVAILABLE twice, then OK.
//! - `Cart/Pay`, not listed: UNAVAILABLE once and returned as it is — a gRPC call is a POST, and
//!   nothing said this method may run twice.
//! - `Cart/Get` with a 300 ms deadline against a handler that takes 5 s: the deadline travels as
//!   `grpc-timeout`, the server's deadline layer drops the handler, the caller gets
//!   DEADLINE_EXCEEDED.
//!
//! The messages are prost structs derived by hand and the server routes by hand with
//! `tonic::server::Grpc`, as tonic's generated code does: no protoc, no build script.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use backstop::ServiceBuilderExt;
use backstop::breaker::CircuitBreakerLayer;
use backstop::classify::{GrpcCode, GrpcPolicy};
use backstop::deadline::{AttemptTimeoutLayer, DeadlineLayer, ServerDeadlineLayer};
use backstop::retry::{GrpcRetryPolicy, MethodRetry, ReplayBody, RetryInfo, RetryLayer};
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::transport::Endpoint;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::{Service, ServiceBuilder, service_fn};

#[derive(Clone, PartialEq, prost::Message)]
struct CartRequest {
    #[prost(string, tag = "1")]
    item: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CartReply {
    #[prost(string, tag = "1")]
    item: String,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let server = Server::default();
    server.script(&[Some(Code::Unavailable), Some(Code::Unavailable), None]);
    let addr = server.serve().await?;

    // The service config's `retryPolicy`, for `shop.Cart/Get` only.
    let methods = GrpcRetryPolicy::new().method(
        "shop.Cart",
        "Get",
        MethodRetry::new(3, [GrpcCode::Unavailable]),
    );
    let retry = RetryLayer::builder()
        .policy(GrpcPolicy::new())
        .grpc_methods(methods)
        .seed(1)
        .build()?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
    // tonic's `Channel` takes its own body type; the retry layer's replayable body is boxed
    // into it below every layer.
    let channel = ServiceBuilder::new()
        .map_request(|req: http::Request<ReplayBody<tonic::body::Body>>| {
            req.map(tonic::body::Body::new)
        })
        .service(channel);
    let client = |deadline: Duration| {
        let stack = ServiceBuilder::new()
            // tonic turns an error it does not know into UNKNOWN: say what it was.
            .map_err(|err: backstop::Error| {
                Status::new(
                    Code::from_i32(err.kind().grpc_code().as_i32()),
                    err.to_string(),
                )
            })
            .deadline(DeadlineLayer::new(deadline))
            .retry_classified(retry.clone())
            .circuit_breaker(CircuitBreakerLayer::new())
            .classify_with(GrpcPolicy::new())
            .attempt_timeout(AttemptTimeoutLayer::new(Duration::from_secs(2)))
            .service(channel.clone());
        tonic::client::Grpc::new(stack)
    };

    for (method, deadline) in [
        ("/shop.Cart/Get", Duration::from_secs(5)),
        ("/shop.Cart/Pay", Duration::from_secs(5)),
        ("/shop.Cart/Get", Duration::from_millis(300)),
    ] {
        if deadline < Duration::from_secs(1) {
            server.slow(Duration::from_secs(5));
        } else if method.ends_with("Pay") {
            server.script(&[Some(Code::Unavailable), None]);
        }
        let before = server.deliveries();
        let start = Instant::now();
        let mut grpc = client(deadline);
        grpc.ready()
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        let result = grpc
            .unary(
                tonic::Request::new(CartRequest { item: "tea".into() }),
                PathAndQuery::from_static(method),
                ProstCodec::<CartRequest, CartReply>::default(),
            )
            .await;
        let delivered = server.deliveries() - before;
        let elapsed = start.elapsed();
        match result {
            Ok(res) => {
                let info = res
                    .extensions()
                    .get::<RetryInfo>()
                    .copied()
                    .unwrap_or_default();
                println!(
                    "{method:<15} OK ({:?})  attempts {}  delays {:?}  deliveries {delivered}  {elapsed:.0?}",
                    res.get_ref().item,
                    info.attempts(),
                    info.delays().collect::<Vec<_>>(),
                );
            }
            Err(status) => println!(
                "{method:<15} {:?}  deliveries {delivered}  {elapsed:.0?}  ({})",
                status.code(),
                status.message(),
            ),
        }
    }
    // The slow handler's end is never reached: the server stops waiting at the deadline (it may
    // do so a moment after the caller heard, so wait for it, within a bound).
    let stopped = tokio::time::timeout(Duration::from_secs(2), server.stopped.notified()).await;
    println!(
        "slow handlers dropped by the server: {} ({})",
        server.dropped(),
        if stopped.is_ok() {
            "at the deadline"
        } else {
            "never: the deadline was not enforced"
        },
    );
    Ok(())
}

// === the server: tonic's `server::Grpc` behind backstop's ServerDeadlineLayer ===

/// A scripted server: each delivery takes the next answer (`Some(code)` fails with it, `None`
/// succeeds), or sleeps when told to.
#[derive(Clone, Default)]
struct Server {
    script: Arc<Mutex<VecDeque<Option<Code>>>>,
    slow: Arc<Mutex<Option<Duration>>>,
    deliveries: Arc<Mutex<usize>>,
    dropped: Arc<Mutex<usize>>,
    stopped: Arc<Notify>,
}

impl Server {
    fn script(&self, answers: &[Option<Code>]) {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(answers);
    }

    fn slow(&self, delay: Duration) {
        *self.slow.lock().unwrap_or_else(|e| e.into_inner()) = Some(delay);
    }

    fn deliveries(&self) -> usize {
        *self.deliveries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dropped(&self) -> usize {
        *self.dropped.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(
        self,
        req: tonic::Request<CartRequest>,
    ) -> Result<tonic::Response<CartReply>, Status> {
        *self.deliveries.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let slow = self.slow.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(delay) = slow {
            // Counts the handler as dropped unless it reaches its end.
            struct Dropped(Arc<Mutex<usize>>, Arc<Notify>, bool);
            impl Drop for Dropped {
                fn drop(&mut self) {
                    if !self.2 {
                        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                        self.1.notify_one();
                    }
                }
            }
            let mut guard = Dropped(self.dropped.clone(), self.stopped.clone(), false);
            tokio::time::sleep(delay).await;
            guard.2 = true;
        }
        let next = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        match next.flatten() {
            Some(code) => Err(Status::new(code, "scripted failure")),
            None => Ok(tonic::Response::new(CartReply {
                item: req.into_inner().item,
            })),
        }
    }

    /// Serves HTTP/2 on a loopback port until the example ends.
    async fn serve(&self) -> Result<SocketAddr, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let svc = ServiceBuilder::new()
            .layer(ServerDeadlineLayer::new())
            .service(Router(self.clone()));
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let svc = TowerToHyperService::new(svc.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        Ok(addr)
    }
}

/// What tonic's generated server does: one `tonic::server::Grpc` per method.
#[derive(Clone)]
struct Router(Server);

impl Service<http::Request<Incoming>> for Router {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            Ok(match req.uri().path() {
                "/shop.Cart/Get" | "/shop.Cart/Pay" => {
                    let method = service_fn(move |r| server.clone().handle(r));
                    let codec = ProstCodec::<CartReply, CartRequest>::default();
                    tonic::server::Grpc::new(codec).unary(method, req).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}
