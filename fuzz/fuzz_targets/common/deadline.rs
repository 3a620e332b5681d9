//! Runs one request carrying a deadline header through the server `DeadlineLayer`, on a paused
//! clock, to check what the handler is given against what the header said.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backstop_deadline::{Deadline, ServerDeadlineLayer};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

/// The server's ceiling: no handler is given more, whatever the caller asks.
pub const MAX: Duration = Duration::from_secs(45);

/// What the server did with the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// The handler ran with this long left (`None`: no deadline at all).
    Ran(Option<Duration>),
    /// The handler did not run; the caller was answered with this status.
    Refused(StatusCode),
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    })
}

/// Serves one request with `name: value` through a layer with ceiling [`MAX`] and no default.
pub fn serve(name: &'static str, value: HeaderValue) -> Served {
    runtime().block_on(async move {
        let layer = ServerDeadlineLayer::builder()
            .no_default_timeout()
            .max_timeout(MAX)
            .build()
            .expect("a valid layer");
        let seen: Arc<Mutex<Option<Option<Deadline>>>> = Arc::default();
        let record = seen.clone();
        let svc = layer.layer(tower::service_fn(move |req: Request<()>| {
            *record.lock().expect("not poisoned") = Some(Deadline::of(&req));
            async { Ok::<_, Infallible>(Response::new(String::new())) }
        }));
        let mut req = Request::new(());
        req.headers_mut()
            .insert(HeaderName::from_static(name), value);
        let start = Instant::now();
        let res = svc.oneshot(req).await.expect("infallible");
        match seen.lock().expect("not poisoned").take() {
            Some(deadline) => {
                assert_eq!(res.status(), StatusCode::OK);
                Served::Ran(deadline.map(|d| d.instant().saturating_duration_since(start)))
            }
            None => Served::Refused(res.status()),
        }
    })
}
