//! [`shutdown_signal`]: the future a server's shutdown usually waits for.

use std::future::Future;

/// A future that completes on the first `SIGTERM` or `SIGINT` (Ctrl-C) — on other platforms,
/// on Ctrl-C — for [`Server::serve_with_shutdown`](crate::Server::serve_with_shutdown), or
/// axum's `with_graceful_shutdown`.
///
/// Both must drain: `SIGTERM` is what process managers send (systemd, Kubernetes, Docker stop),
/// `SIGINT` what a terminal sends. The handlers are installed when this function is called
/// (inside a Tokio runtime), not when the future is first polled, so a signal arriving in
/// between is not lost to the default action of ending the process. Called outside a runtime,
/// they are installed at the first poll instead. A handler that cannot be installed is logged at
/// warn; that signal then keeps its default action (ending the process at once).
///
/// ```no_run
/// use backstop_server::{Server, ServeConfig, shutdown_signal};
/// # use std::convert::Infallible;
/// # use http::{Request, Response};
/// # use backstop_server::IncomingBody;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let app = tower::service_fn(|_req: Request<IncomingBody>| async {
/// #     Ok::<_, Infallible>(Response::new(String::from("hello\n")))
/// # });
/// let server = Server::bind("127.0.0.1:8080".parse()?, ServeConfig::default()).await?;
/// // Serves until SIGTERM or Ctrl-C, then drains in-flight requests and returns.
/// let summary = server.serve_with_shutdown(app, shutdown_signal()).await?;
/// println!("stopped: {summary:?}");
/// # Ok(())
/// # }
/// ```
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let installed = tokio::runtime::Handle::try_current()
        .ok()
        .map(|_| Handlers::install());
    async move {
        let handlers = match installed {
            Some(handlers) => handlers,
            None => Handlers::install(),
        };
        handlers.first().await;
    }
}

#[cfg(unix)]
struct Handlers {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Handlers {
    fn install() -> Handlers {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::warn!(signal = name, error = %err, "cannot install a shutdown signal handler");
                None
            }
        };
        Handlers {
            term: install(SignalKind::terminate(), "SIGTERM"),
            int: install(SignalKind::interrupt(), "SIGINT"),
        }
    }

    async fn first(self) {
        // A signal without a handler never completes its branch here (it ends the process
        // instead); a closed stream (the runtime shutting down) counts as a signal.
        async fn one(signal: Option<tokio::signal::unix::Signal>, name: &'static str) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                    tracing::info!(signal = name, "shutdown signal received; draining");
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = one(self.term, "SIGTERM") => {}
            () = one(self.int, "SIGINT") => {}
        }
    }
}

#[cfg(not(unix))]
struct Handlers;

#[cfg(not(unix))]
impl Handlers {
    fn install() -> Handlers {
        Handlers
    }

    async fn first(self) {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("Ctrl-C received; draining"),
            Err(err) => {
                tracing::warn!(error = %err, "cannot install the Ctrl-C handler");
                std::future::pending::<()>().await;
            }
        }
    }
}
