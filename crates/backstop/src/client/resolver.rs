//! [`FnResolver`]: a DNS resolver made from an async function.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use backstop_classify::BoxError;
use hyper_util::client::legacy::connect::dns::Name;
use tower::Service;

/// The future a resolver returns: the addresses of a name.
type ResolveFuture =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, BoxError>> + Send>>;

/// A resolver built from an async function, for [`ClientBuilder::resolver`](crate::ClientBuilder::resolver).
#[derive(Clone)]
pub struct FnResolver {
    resolve: Arc<dyn Fn(Name) -> ResolveFuture + Send + Sync>,
}

impl fmt::Debug for FnResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnResolver").finish_non_exhaustive()
    }
}

impl FnResolver {
    /// Wraps `resolve`.
    pub fn new<F, Fut>(resolve: F) -> FnResolver
    where
        F: Fn(Name) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<SocketAddr>, BoxError>> + Send + 'static,
    {
        FnResolver {
            resolve: Arc::new(move |name| {
                let fut = resolve(name);
                Box::pin(async move { fut.await.map(Vec::into_iter) })
            }),
        }
    }
}

impl Service<Name> for FnResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        (self.resolve)(name)
    }
}
