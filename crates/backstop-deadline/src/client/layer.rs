//! [`DeadlineLayer`] and its builder: the client deadline's settings, checked once.

use std::time::Duration;

use backstop_classify::{Failure, Phase};
use http::Request;
use tokio::time::Instant;
use tower_layer::Layer;

use super::{Carry, Covers, DeadlineService, InnerWaits};
use crate::ambient::{self, Budget};
use crate::metrics::SIDE_CLIENT;
use crate::propagate::{Prepared, Propagation};
use crate::{ConfigError, Deadline, MAX_DEADLINE_AHEAD, deadline_failure};

/// The outermost ceiling over a call: every attempt, every backoff sleep and, by default, the
/// response body.
///
/// The effective deadline is the earliest of the layer's own timeout, a
/// [`Deadline`](crate::Deadline) already on the request, and the [ambient](mod@crate::ambient)
/// deadline of the server handler the call is made from. The layers inside read it with
/// [`Deadline::current`](crate::Deadline::current) (retry clamps its backoff to it;
/// [`AttemptTimeout`](crate::AttemptTimeout) bounds each attempt by it): it is
/// [carried](Carry) as their ambient deadline, and optionally in the request extensions. Where
/// it is wanted it is also written into the outgoing headers ([`Propagation`]: gRPC requests by
/// default, plain HTTP ones when turned on). At the deadline the inner future is
/// dropped and the call fails with timed out (deadline), which is never retried.
///
/// # When the clock starts
/// The layer's own timeout counts from the call. When nothing else bounds the call (no deadline
/// on the request, none ambient) and [`Carry::TaskLocal`] is used, the clock is read lazily: at
/// the first moment anything needs the deadline — a layer inside asking for it, the inner future
/// having to wait, or a response body that has yet to stream — rather than in `call`. Until then
/// nothing can have waited on the deadline, and on tokio's clock no time passes within the
/// synchronous `call` and first poll of an `.await`ed call (a paused clock only moves when the
/// runtime parks); in real time, the start moves by the synchronous work done before the first
/// wait (microseconds). Only a response future created and then left unpolled starts its clock
/// at its first poll (a layer inside that asked for the deadline within `call` keeps the earlier
/// instant it was given, so the inner bound is then the tighter one). The propagated header is
/// unaffected: it carries the whole timeout minus the margin either way, never more than is left.
/// In exchange a call answered at once costs no clock read, no timer and no allocation.
///
/// # One timer, not two
/// By default the layer arms a timer of its own (boxed, so the future it adds to every call stays
/// a few words; one allocation for a call that has to wait) the first time the inner future
/// leaves the call waiting. When the stack inside is built so that an
/// [`AttemptTimeout`](crate::AttemptTimeout) bounds every wait by this deadline, say so with
/// [`inner_waits`](DeadlineLayerBuilder::inner_waits)`(`[`InnerWaits::BoundedByAttemptTimeout`]`)`:
/// the attempt's timer then wakes the call in time and this layer registers none.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::{Covers, DeadlineLayer};
///
/// // Infallible, as tower-http's layers: 2 s, covering the body.
/// let simple = DeadlineLayer::new(Duration::from_secs(2));
/// // Every setting, checked.
/// let layer = DeadlineLayer::builder()
///     .timeout(Duration::from_secs(2))
///     .covers(Covers::Head)
///     .build()?;
/// # let _ = (simple, layer);
/// # Ok::<(), backstop_deadline::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    pub(super) timeout: Option<Duration>,
    pub(super) covers: Covers,
    pub(super) carry: Carry,
    pub(super) inner_waits: InnerWaits,
    pub(super) propagation: Propagation,
    // The headers for the whole timeout left, formatted once (see `Propagation::prepare`).
    pub(super) prepared: Option<Prepared>,
}

impl DeadlineLayer {
    /// A ceiling of `timeout` over every call, covering the response body, carried ambiently,
    /// with the default [`Propagation`] and the layer's own timer. Never fails: a zero timeout
    /// fails every call at once with timed out (deadline) without calling the inner service, one
    /// beyond [`MAX_DEADLINE_AHEAD`] is clamped to it, and a timeout not longer than the
    /// propagation margin plus [`MIN_PROPAGATED`](crate::propagate::MIN_PROPAGATED) fails the
    /// requests that are to carry a header (gRPC ones) locally. The
    /// [builder](DeadlineLayer::builder) rejects those instead.
    pub fn new(timeout: Duration) -> DeadlineLayer {
        DeadlineLayer {
            timeout: Some(timeout),
            ..DeadlineLayer::inherit()
        }
        .prepared()
    }

    /// A builder; see [`DeadlineLayerBuilder`].
    pub fn builder() -> DeadlineLayerBuilder {
        DeadlineLayerBuilder {
            layer: DeadlineLayer::inherit(),
        }
    }

    /// A layer with no timeout of its own: it enforces and propagates only the deadline it
    /// inherits (from the request or the ambient server handler), covering the body, with the
    /// default [`Propagation`] (`grpc-timeout` on gRPC requests, nothing on plain HTTP ones).
    pub fn inherit() -> DeadlineLayer {
        DeadlineLayer {
            timeout: None,
            covers: Covers::Body,
            carry: Carry::TaskLocal,
            inner_waits: InnerWaits::Unbounded,
            propagation: Propagation::new(),
            prepared: None,
        }
    }

    /// The timeout clamped, and the values derived from the settings computed once.
    fn prepared(mut self) -> DeadlineLayer {
        self.timeout = self.timeout.map(|t| t.min(MAX_DEADLINE_AHEAD));
        self.prepared = self.timeout.and_then(|t| self.propagation.prepare(t));
        self
    }

    /// Whether a call bounded by `timeout` alone may start its clock lazily: the timeout is not
    /// zero (that fails at once) and its headers were prepared or none is ever written. (A
    /// margin too large for the timeout leaves nothing to prepare; `Propagation::write` then
    /// fails, per request, those that are to carry a header.) Computed rather than stored: the
    /// layer is cloned into every service.
    #[inline]
    pub(super) fn lazy(&self, timeout: Duration) -> bool {
        !timeout.is_zero() && (self.prepared.is_some() || !self.propagation.is_enabled())
    }

    /// The deadline a call of `req` runs under (`None`: no deadline anywhere), with the headers
    /// written and the extension inserted as configured; or why it must not be sent. Only the
    /// layer's own timeout applies in the common case: it is then a budget that has not started
    /// (see "When the clock starts").
    #[inline]
    pub(super) fn plan<B>(&self, req: &mut Request<B>) -> Result<Option<Budget>, Failure> {
        if let Some(timeout) = self.timeout
            && self.lazy(timeout)
            && self.carry == Carry::TaskLocal
            && ambient::peek().is_none()
            && Deadline::of(req).is_none()
        {
            // Its headers are the prepared ones.
            if let Some(prepared) = &self.prepared {
                self.propagation.write_prepared(req, prepared);
            }
            return Ok(Some(Budget::NotStarted(timeout)));
        }
        let now = Instant::now();
        let own = self.timeout.map(|t| Deadline::at(now + t));
        let Some(deadline) = earliest(own, Deadline::current(req)) else {
            return Ok(None);
        };
        if deadline.instant() <= now {
            crate::telemetry::expired(SIDE_CLIENT, None);
            return Err(deadline_failure(Phase::Local));
        }
        self.propagation.write(req, deadline.instant(), now)?;
        if self.carry == Carry::Extensions {
            crate::carry_in_extensions(req, deadline);
        }
        Ok(Some(Budget::At(deadline)))
    }
}

/// Builds a [`DeadlineLayer`]; invalid settings are rejected by [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct DeadlineLayerBuilder {
    layer: DeadlineLayer,
}

impl DeadlineLayerBuilder {
    /// The layer's own ceiling, from the moment the call starts. Must be greater than zero.
    /// Without one, only inherited deadlines apply.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.layer.timeout = Some(timeout);
        self
    }

    /// Whether the deadline covers the response body (default) or only the head.
    #[must_use]
    pub fn covers(mut self, covers: Covers) -> Self {
        self.layer.covers = covers;
        self
    }

    /// How the deadline reaches the inner layers (default: [ambiently](Carry::TaskLocal)).
    #[must_use]
    pub fn carry(mut self, carry: Carry) -> Self {
        self.layer.carry = carry;
        self
    }

    /// How the time left is written into the outgoing request (default [`Propagation::new`]:
    /// `grpc-timeout` on gRPC requests only).
    ///
    /// When an [`AttemptTimeout`](crate::AttemptTimeout) sits inside, it rewrites the headers for
    /// every attempt; [`Propagation::disabled`] here then saves one header write per call.
    #[must_use]
    pub fn propagation(mut self, propagation: Propagation) -> Self {
        self.layer.propagation = propagation;
        self
    }

    /// What the layers inside may wait on before the response head (default
    /// [`InnerWaits::Unbounded`]: this layer arms its own timer). With
    /// [`InnerWaits::BoundedByAttemptTimeout`] the attempt timeout inside wakes the call at the
    /// deadline and this layer registers no timer for the head.
    #[must_use]
    pub fn inner_waits(mut self, inner_waits: InnerWaits) -> Self {
        self.layer.inner_waits = inner_waits;
        self
    }

    /// The layer, or the first rule the settings break: `timeout` must be greater than zero, and
    /// `propagation.margin` plus [`MIN_PROPAGATED`](crate::propagate::MIN_PROPAGATED) at most the
    /// timeout when propagation is enabled. A timeout beyond [`MAX_DEADLINE_AHEAD`] is clamped to
    /// it.
    pub fn build(self) -> Result<DeadlineLayer, ConfigError> {
        if let Some(timeout) = self.layer.timeout {
            if timeout.is_zero() {
                return Err(ConfigError::new("timeout", "must be greater than zero"));
            }
            self.layer
                .propagation
                .validate_against(timeout, "must be at least 1 ms shorter than timeout")?;
        }
        Ok(self.layer.prepared())
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService::new(inner, self.clone())
    }
}

fn earliest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.earliest(b)),
        (a, b) => a.or(b),
    }
}
