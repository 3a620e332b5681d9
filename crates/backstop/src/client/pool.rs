//! [`ServicePool`]: instances of the client's service stack, reused across calls.

use backstop_classify::Error;
use backstop_retry::RetryBudget;
use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::{RequestBody, ResponseBody};

/// The client's whole stack, type-erased: what one pooled instance is.
pub(super) type StackService =
    BoxCloneSyncService<Request<RequestBody>, Response<ResponseBody>, Error>;

/// Instances of the service stack, reused across calls.
///
/// A tower service is called through `&mut self`, so a client shared by many tasks needs an
/// instance per call in flight. Cloning the whole stack for every call (and dropping it after)
/// costs a dozen reference-count updates and an allocation, and throws away what an instance
/// learned (the circuit breaker caches the breaker of the host it last called). Instances are
/// taken from this pool for the synchronous `call` only — the response future they return owns
/// everything it needs — and put back at once.
pub(super) struct ServicePool {
    template: StackService,
    idle: std::sync::Mutex<Vec<StackService>>,
    /// The stack's retry budget, for [`Client::retry_budget`](super::Client::retry_budget):
    /// kept here, behind the `Arc` every clone of the client already shares, so that a clone
    /// stays two reference counts.
    pub(super) retry_budget: Option<RetryBudget>,
}

/// The most idle instances kept; beyond that, returned instances are dropped.
const POOLED_INSTANCES: usize = 64;

impl ServicePool {
    pub(super) fn new(template: StackService, retry_budget: Option<RetryBudget>) -> ServicePool {
        ServicePool {
            template,
            idle: std::sync::Mutex::new(Vec::new()),
            retry_budget,
        }
    }

    /// The pool is never waited for: a worker thread blocked on it would stall every task it
    /// runs, so when another thread holds it, a fresh instance is cloned (and, on return,
    /// dropped) instead.
    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Vec<StackService>>> {
        match self.idle.try_lock() {
            Ok(idle) => Some(idle),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn take(&self) -> StackService {
        let pooled = self.lock().and_then(|mut idle| idle.pop());
        pooled.unwrap_or_else(|| self.template.clone())
    }

    fn give(&self, service: StackService) {
        if let Some(mut idle) = self.lock()
            && idle.len() < POOLED_INSTANCES
        {
            idle.push(service);
        }
    }

    pub(super) async fn call(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>, Error> {
        let mut service = self.take();
        // Every layer of the stack is ready at once (none applies back-pressure), so this does
        // not wait in practice; it is awaited all the same, as tower requires.
        let future = match service.ready().await {
            Ok(ready) => ready.call(req),
            Err(err) => return Err(err),
        };
        self.give(service);
        future.await
    }
}
