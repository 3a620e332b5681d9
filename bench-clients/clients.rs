//! The stack bench's hyper-util clients, each built from this one source into four crates
//! (`stack-client-a` to `-d`), so that each crate instantiates hyper's, hyper-util's and http's
//! generic code for itself: one client per crate runs code no other client of the bench runs,
//! as backstop's client (instantiated in backstop's crates) always has. Built in the bench's own
//! crate, the bare client, the control and the peers' stack shared one copy of everything
//! generic in their request path even over connector and body types of their own: the request
//! builder, the header map's inserts, the pool key's hashing (about 236 code lines per request;
//! "Twenty-ninth pass" in BENCHMARKS.md).
//!
//! Only the code each crate compiles differs between them; what they do is the same.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, RetryLayer};
use tower::timeout::TimeoutLayer;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// A bare hyper-util client: hyper-util's `HttpConnector` (no connect timeout), a pool.
#[derive(Clone)]
pub struct Bare {
    client: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Bare {
    /// A client with hyper-util's defaults.
    pub fn new() -> Bare {
        Bare {
            client: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET url`, its body read to the end. Panics on any failure: the bench's upstream
    /// answers every request.
    pub async fn get(&self, url: &str) {
        let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
        let res = self.client.request(req).await.unwrap();
        let _ = res.into_body().collect().await.unwrap();
    }
}

impl Default for Bare {
    fn default() -> Bare {
        Bare::new()
    }
}

/// A tower stack over a hyper-util client, type-erased: tower's `Timeout` alone, or the
/// peers' usual stack.
#[derive(Clone)]
pub struct Tower {
    service: BoxCloneSyncService<Request<Full<Bytes>>, http::Response<Incoming>, tower::BoxError>,
}

impl Tower {
    /// The least protection there is: one tower `Timeout` (10 s; one timer per request) over
    /// the peers' hyper-util client.
    pub fn timeout() -> Tower {
        let service = ServiceBuilder::new()
            .layer(TimeoutLayer::new(Duration::from_secs(10)))
            .service(peer_client());
        Tower {
            service: BoxCloneSyncService::new(service),
        }
    }

    /// The peers' usual stack: tower's `Retry` (3 attempts in all, a `TpsBudget` of 20 %)
    /// around tower-resilience's circuit breaker (50 % of the last 100 calls, at least 20)
    /// around tower's `Timeout` (10 s), over the peers' hyper-util client.
    pub fn peers() -> Tower {
        let breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .failure_rate_threshold(0.5)
            .sliding_window_size(100)
            .minimum_number_of_calls(20)
            .wait_duration_in_open(Duration::from_secs(30))
            .build()
            .unwrap();
        let service = ServiceBuilder::new()
            .layer(RetryLayer::new(PeerPolicy {
                retries_left: 2,
                budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            }))
            .layer(breaker)
            .layer(TimeoutLayer::new(Duration::from_secs(10)))
            .service(peer_client())
            .map_err(tower::BoxError::from);
        Tower {
            service: BoxCloneSyncService::new(service),
        }
    }

    /// `GET url` through a clone of the stack (as tower's `Retry` needs), its body read to the
    /// end. Panics on any failure.
    pub async fn get(&self, url: &str) {
        let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
        let res = self.service.clone().oneshot(req).await.unwrap();
        let _ = res.into_body().collect().await.unwrap();
    }
}

/// The peers' hyper-util client: `HttpConnector` with a connect timeout (5 s).
fn peer_client() -> HyperClient<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    HyperClient::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector)
}

/// tower's retry policy as its documentation shows it: errors and 5xx retried, up to 3 attempts
/// in all, within a `TpsBudget` (20 %, as backstop's default budget).
#[derive(Clone)]
struct PeerPolicy {
    retries_left: usize,
    budget: Arc<TpsBudget>,
}

impl<E> Policy<Request<Full<Bytes>>, http::Response<Incoming>, E> for PeerPolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<http::Response<Incoming>, E>,
    ) -> Option<Self::Future> {
        match result {
            Ok(res) if !res.status().is_server_error() => {
                self.budget.deposit();
                None
            }
            _ if self.retries_left > 0 && self.budget.withdraw() => {
                self.retries_left -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}
