//! [`ServicePool`]: instances of the client's service stack, reused across calls.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use backstop_classify::Error;
use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::RequestBody;
use super::body::AttemptBody;

/// The client's whole stack, type-erased: what one pooled instance is. Its response is the
/// stack's own (`Response<AttemptBody>`); the client makes it a
/// [`ResponseBody`](super::ResponseBody), bounded by the call's deadline, where it records the
/// call, not in one more future around the stack's.
pub(super) type StackService<Res = Response<AttemptBody>> =
    BoxCloneSyncService<Request<RequestBody>, Res, Error>;

/// What [`ServicePool::call`] returns: the stack's boxed future (or, should an instance not be
/// ready at once, one that waits for it).
pub(super) type StackFuture<'a, Res> =
    Pin<Box<dyn Future<Output = Result<Res, Error>> + Send + 'a>>;

/// Instances of the service stack, reused across calls.
///
/// A tower service is called through `&mut self`, so a client shared by many tasks needs an
/// instance per call in flight. Cloning the whole stack for every call (and dropping it after)
/// costs a dozen reference-count updates and an allocation, and throws away what an instance
/// learned (the circuit breaker caches the breaker of the host it last called). Instances are
/// taken from this pool for the synchronous `call` only — the response future they return owns
/// everything it needs — and put back at once.
pub(super) struct ServicePool<Res = Response<AttemptBody>> {
    template: StackService<Res>,
    idle: std::sync::Mutex<Vec<StackService<Res>>>,
}

/// The most idle instances kept; beyond that, returned instances are dropped.
const POOLED_INSTANCES: usize = 64;

impl<Res: Send + 'static> ServicePool<Res> {
    pub(super) fn new(template: StackService<Res>) -> ServicePool<Res> {
        ServicePool {
            template,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The pool is never waited for: a worker thread blocked on it would stall every task it
    /// runs, so when another thread holds it, a fresh instance is cloned (and, on return,
    /// dropped) instead.
    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Vec<StackService<Res>>>> {
        match self.idle.try_lock() {
            Ok(idle) => Some(idle),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn take(&self) -> StackService<Res> {
        let pooled = self.lock().and_then(|mut idle| idle.pop());
        pooled.unwrap_or_else(|| self.template.clone())
    }

    fn give(&self, service: StackService<Res>) {
        if let Some(mut idle) = self.lock()
            && idle.len() < POOLED_INSTANCES
        {
            idle.push(service);
        }
    }

    /// Calls an instance of the stack with `req`, and puts the instance back at once.
    ///
    /// Not an `async fn`: every layer of the stack is ready at once (none applies
    /// back-pressure), so asked once without a waker it says so, and the call is made here. The
    /// caller then awaits the stack's own boxed future, instead of a state machine that would
    /// first copy the request in to wait for readiness that is already there. Should an
    /// instance ever not be ready, it is awaited, as tower requires.
    pub(super) fn call(&self, req: Request<RequestBody>) -> StackFuture<'_, Res> {
        let mut service = self.take();
        match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => {
                let future = service.call(req);
                self.give(service);
                future
            }
            Poll::Ready(Err(err)) => Box::pin(std::future::ready(Err(err))),
            Poll::Pending => self.boxed_call_when_ready(service, req),
        }
    }

    /// Out of line: the waiting future is built on the stack before it is boxed, and would
    /// otherwise widen `call`'s frame, under which every call runs the whole stack.
    #[cold]
    #[inline(never)]
    fn boxed_call_when_ready(
        &self,
        service: StackService<Res>,
        req: Request<RequestBody>,
    ) -> StackFuture<'_, Res> {
        Box::pin(self.call_when_ready(service, req))
    }

    async fn call_when_ready(
        &self,
        mut service: StackService<Res>,
        req: Request<RequestBody>,
    ) -> Result<Res, Error> {
        let future = match service.ready().await {
            Ok(ready) => ready.call(req),
            Err(err) => return Err(err),
        };
        self.give(service);
        future.await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use backstop_classify::{Kind, Phase};

    use super::*;
    use crate::client::ResponseBody;

    /// A stack instance whose first `not_ready` polls of readiness say "not yet" (waking the
    /// caller), and which then fails readiness or answers `200`.
    #[derive(Clone)]
    struct Slow {
        not_ready: Arc<AtomicUsize>,
        fail: bool,
    }

    impl Service<Request<RequestBody>> for Slow {
        type Response = Response<ResponseBody>;
        type Error = Error;
        type Future = std::future::Ready<Result<Response<ResponseBody>, Error>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
            let left = self.not_ready.load(Ordering::SeqCst);
            if left > 0 {
                self.not_ready.store(left - 1, Ordering::SeqCst);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.fail {
                return Poll::Ready(Err(Error::new(Kind::Other, Phase::Local)));
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<RequestBody>) -> Self::Future {
            std::future::ready(Ok(Response::new(ResponseBody::default())))
        }
    }

    fn pool(
        not_ready: usize,
        fail: bool,
    ) -> (ServicePool<Response<ResponseBody>>, Arc<AtomicUsize>) {
        let left = Arc::new(AtomicUsize::new(not_ready));
        let slow = Slow {
            not_ready: left.clone(),
            fail,
        };
        (ServicePool::new(StackService::new(slow)), left)
    }

    #[tokio::test]
    async fn an_instance_not_ready_at_once_is_awaited_then_called() {
        for not_ready in [0, 1, 3] {
            let (pool, left) = pool(not_ready, false);
            let res = pool.call(Request::new(RequestBody::empty())).await.unwrap();
            assert_eq!(res.status(), http::StatusCode::OK);
            assert_eq!(
                left.load(Ordering::SeqCst),
                0,
                "readiness asked until ready"
            );
            assert_eq!(pool.idle.lock().unwrap().len(), 1, "the instance went back");
        }
    }

    #[tokio::test]
    async fn a_readiness_failure_is_the_calls_error_whether_at_once_or_later() {
        for not_ready in [0, 2] {
            let (pool, _) = pool(not_ready, true);
            let err = pool
                .call(Request::new(RequestBody::empty()))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), Kind::Other);
            assert_eq!(
                pool.idle.lock().unwrap().len(),
                0,
                "a failed instance is dropped"
            );
        }
    }
}
