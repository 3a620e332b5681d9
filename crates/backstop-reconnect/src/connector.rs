//! [`Connector`]: how a connection is made, and the two generic ways to provide one
//! ([`connect_fn`], [`ServiceConnector`]).

use std::future::{Future, poll_fn};

use backstop_classify::{BoxError, Error, Phase};
use futures_util::{Sink, Stream};
use tower_service::Service;

/// Makes one connection each time it is called; the supervisor calls it again after every
/// disconnect.
///
/// A connection is a [`Stream`] of incoming messages and a [`Sink`] of outgoing ones, both
/// failing with a classified [`Error`] (the adapters map their protocol's errors; for your own
/// use `Error::classify` or `Error::from_io` with the phase the failure happened in).
pub trait Connector: Send + 'static {
    /// The message type, incoming and outgoing. `Clone` so a message whose write failed can be
    /// handed back or sent again instead of being lost.
    type Msg: Clone + Send + 'static;
    /// One established connection.
    type Conn: Stream<Item = Result<Self::Msg, Error>>
        + Sink<Self::Msg, Error = Error>
        + Send
        + Unpin
        + 'static;

    /// Establishes a new connection.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Conn, Error>> + Send;
}

// === impl FnConnector ===

/// A [`Connector`] from an async function; made by [`connect_fn`].
#[derive(Debug, Clone)]
pub struct FnConnector<F> {
    f: F,
}

/// A [`Connector`] calling `f` for every connection.
///
/// ```
/// use backstop_reconnect::{connect_fn, TcpLines};
///
/// let tcp = TcpLines::new("127.0.0.1:9")?;
/// // e.g. to pick the address anew on every attempt, or to log each one.
/// let connector = connect_fn(move || {
///     let mut tcp = tcp.clone();
///     async move { backstop_reconnect::Connector::connect(&mut tcp).await }
/// });
/// # drop(connector);
/// # Ok::<(), backstop_classify::ConfigError>(())
/// ```
pub fn connect_fn<F>(f: F) -> FnConnector<F> {
    FnConnector { f }
}

impl<F, Fut, C, M> Connector for FnConnector<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<C, Error>> + Send,
    C: Stream<Item = Result<M, Error>> + Sink<M, Error = Error> + Send + Unpin + 'static,
    M: Clone + Send + 'static,
{
    type Msg = M;
    type Conn = C;

    fn connect(&mut self) -> impl Future<Output = Result<C, Error>> + Send {
        (self.f)()
    }
}

// === impl ServiceConnector ===

/// A [`Connector`] calling a tower `Service<T>` with the same target every time (a connector
/// service stack: timeouts, TLS, proxies, built with tower).
#[derive(Debug, Clone)]
pub struct ServiceConnector<S, T> {
    service: S,
    target: T,
}

impl<S, T> ServiceConnector<S, T> {
    /// Connects by calling `service` with a clone of `target`.
    pub fn new(service: S, target: T) -> Self {
        ServiceConnector { service, target }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }
}

impl<S, T, M> Connector for ServiceConnector<S, T>
where
    S: Service<T> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Stream<Item = Result<M, Error>> + Sink<M, Error = Error> + Send + Unpin + 'static,
    T: Clone + Send + 'static,
    M: Clone + Send + 'static,
{
    type Msg = M;
    type Conn = S::Response;

    fn connect(&mut self) -> impl Future<Output = Result<S::Response, Error>> + Send {
        let target = self.target.clone();
        let service = &mut self.service;
        async move {
            poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(|err| Error::classify(err, Phase::Connect))?;
            service
                .call(target)
                .await
                .map_err(|err| Error::classify(err, Phase::Connect))
        }
    }
}
