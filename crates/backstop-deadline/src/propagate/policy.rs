//! [`Propagation`]: which outgoing request gets which deadline header, with how much time.

use std::sync::Arc;
use std::time::Duration;

use backstop_classify::{Error, Failure, Kind, Phase, Timer};
use http::{HeaderName, HeaderValue, Request};
use tokio::time::Instant;

use super::destination::{HostPattern, matches_destination};
use super::wire::{
    DEFAULT_TIMEOUT_HEADER, GRPC_TIMEOUT, Incoming, format_grpc_timeout, format_timeout_ms,
    is_grpc, parse_grpc_timeout, parse_timeout_ms,
};
use crate::ConfigError;

/// The default safety margin subtracted from the time left before it is sent: the time the
/// request spends on the wire and the response needs to come back.
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(10);

/// The smallest budget worth sending: with less than this left after the margin, the call fails
/// locally instead of asking the callee to start work it cannot finish.
pub const MIN_PROPAGATED: Duration = Duration::from_millis(1);

/// Forces, for one request, whether the layers write its deadline into it, whatever the
/// [`Propagation`]'s destinations say: a caller, or a layer in front of the client (e.g. a
/// gateway route's), inserts it in the request extensions.
///
/// It decides only where a header would go; it adds no header a layer is not configured to
/// write at all ([`Propagation::disabled`], [`Propagation::no_header`]), and it removes nothing
/// already on the request.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::{AttemptTimeoutLayer, PropagateDeadline};
/// use http::{Request, Response};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Answers with the milliseconds header it was sent, if any.
/// let echo = service_fn(|req: Request<()>| async move {
///     let sent = req.headers().get("request-timeout-ms").cloned();
///     Ok::<_, std::convert::Infallible>(Response::new(sent))
/// });
/// // The default: no header on plain HTTP requests...
/// let svc = AttemptTimeoutLayer::new(Duration::from_millis(300)).layer(echo);
/// assert_eq!(svc.clone().oneshot(Request::new(())).await?.into_body(), None);
/// // ...unless this request asks for it.
/// let mut req = Request::new(());
/// req.extensions_mut().insert(PropagateDeadline::Always);
/// assert_eq!(svc.oneshot(req).await?.into_body().unwrap(), "290");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropagateDeadline {
    /// Write the milliseconds header into this request (a gRPC one gets `grpc-timeout`, as
    /// always), even to a destination the propagation does not list.
    Always,
    /// Write no deadline header into this request, neither the milliseconds header nor
    /// `grpc-timeout`, even to a destination the propagation lists.
    Never,
}

/// How the time left is written into outgoing requests.
///
/// By default ([`Propagation::new`]): `grpc-timeout` on gRPC requests (`content-type:
/// application/grpc…`), whose servers expect it, and **nothing** on plain HTTP requests. The
/// milliseconds header ([`DEFAULT_TIMEOUT_HEADER`] unless renamed) is opt-in:
///
/// - for every destination: [`header`](Propagation::header), e.g.
///   `Propagation::new().header(DEFAULT_TIMEOUT_HEADER)`;
/// - for some destinations: [`only_to`](Propagation::only_to), matched against each request's
///   authority;
/// - for one request: [`PropagateDeadline`] in its extensions, which overrides both.
///
/// Each header carries the time left minus [`DEFAULT_MARGIN`]. A value already on the request
/// that is shorter is kept: propagation never extends a budget.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::propagate::{DEFAULT_TIMEOUT_HEADER, Propagation};
/// use http::HeaderName;
///
/// // Our own services only, under their usual names.
/// let internal = Propagation::new().only_to(["*.internal", "127.0.0.1:8080"])?;
/// # let _ = internal;
/// // Everywhere, under Envoy's name.
/// let envoy = Propagation::new()
///     .header(HeaderName::from_static("x-envoy-expected-rq-timeout-ms"))
///     .margin(Duration::from_millis(5));
/// assert_eq!(envoy.margin_value(), Duration::from_millis(5));
/// assert_eq!(envoy.header_name(), Some(&HeaderName::from_static("x-envoy-expected-rq-timeout-ms")));
/// assert!(!Propagation::disabled().is_enabled());
/// # Ok::<(), backstop_deadline::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propagation {
    // The milliseconds header, `None` when it is never written. Behind a pointer: the layers
    // (which hold a `Propagation` and are cloned into every service) stay the same size however
    // many destinations are listed, and the default path never looks behind it.
    ms: Option<Arc<MsHeader>>,
    grpc: bool,
    margin: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MsHeader {
    name: HeaderName,
    to: Destinations,
}

/// Where the milliseconds header goes, short of a [`PropagateDeadline`] on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destinations {
    /// Nowhere: only requests marked [`PropagateDeadline::Always`] get it.
    Marked,
    Everywhere,
    /// Requests whose authority matches one of these.
    Only(Box<[HostPattern]>),
}

/// Which header one request gets.
enum Target<'a> {
    Grpc,
    Ms(&'a HeaderName),
}

impl Default for Propagation {
    fn default() -> Self {
        Propagation::new()
    }
}

impl Propagation {
    /// The default: `grpc-timeout` on gRPC requests, nothing on plain HTTP ones unless they are
    /// marked [`PropagateDeadline::Always`] (then [`DEFAULT_TIMEOUT_HEADER`]), 10 ms margin.
    pub fn new() -> Propagation {
        Propagation {
            ms: Some(Arc::new(MsHeader {
                name: DEFAULT_TIMEOUT_HEADER,
                to: Destinations::Marked,
            })),
            grpc: true,
            margin: DEFAULT_MARGIN,
        }
    }

    /// Writes nothing, whatever the request says ([`PropagateDeadline`] included): for a layer
    /// that leaves propagation to another, e.g. a deadline layer with an attempt timeout inside.
    pub fn disabled() -> Propagation {
        Propagation {
            ms: None,
            grpc: false,
            margin: Duration::ZERO,
        }
    }

    /// Writes the milliseconds header `name` into plain HTTP requests (and gRPC ones when
    /// [`grpc`](Propagation::grpc) is off): to every destination, or to those of
    /// [`only_to`](Propagation::only_to) if it was called.
    ///
    /// `Propagation::new().header(DEFAULT_TIMEOUT_HEADER)` turns `request-timeout-ms` on for
    /// every request.
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Propagation {
        let to = match self.ms.as_deref() {
            Some(MsHeader {
                to: to @ Destinations::Only(_),
                ..
            }) => to.clone(),
            _ => Destinations::Everywhere,
        };
        self.ms = Some(Arc::new(MsHeader { name, to }));
        self
    }

    /// Writes the milliseconds header ([`DEFAULT_TIMEOUT_HEADER`] unless
    /// [renamed](Propagation::header)) only into requests whose authority — the URI's, or the
    /// `Host` header's for a request without one — matches one of `hosts`:
    ///
    /// - `payments.internal`: that host, on any port;
    /// - `127.0.0.1:8080`, `payments.internal:443`: that host on that port (a URI without a port
    ///   has its scheme's: 80 for `http`, 443 for `https`);
    /// - `*.internal`: any host ending in `.internal` (not `internal` itself), optionally with a
    ///   port, `*.internal:8443`;
    /// - IPv6 addresses in brackets: `[::1]`, `[::1]:8080`.
    ///
    /// Host names match case-insensitively. gRPC requests are not filtered: they get
    /// `grpc-timeout` wherever they go, as gRPC servers expect (turn it off with
    /// [`grpc(false)`](Propagation::grpc)). A [`PropagateDeadline`] on a request overrides the
    /// list either way.
    ///
    /// An empty list, or a pattern that is none of the above, is rejected naming the field
    /// `propagation.only_to`.
    ///
    /// ```
    /// use backstop_deadline::propagate::Propagation;
    ///
    /// assert!(Propagation::new().only_to(["*.internal", "10.0.0.7:8080"]).is_ok());
    /// let err = Propagation::new().only_to(["https://payments.internal/"]).unwrap_err();
    /// assert_eq!(err.field(), "propagation.only_to");
    /// ```
    pub fn only_to<I>(mut self, hosts: I) -> Result<Propagation, ConfigError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let patterns = hosts
            .into_iter()
            .map(|host| {
                let host = host.as_ref();
                HostPattern::parse(host).ok_or_else(|| {
                    ConfigError::new(
                        "propagation.only_to",
                        format!("`{host}` is not a host, host:port, *.suffix or [IPv6] pattern"),
                    )
                })
            })
            .collect::<Result<Box<[HostPattern]>, ConfigError>>()?;
        if patterns.is_empty() {
            return Err(ConfigError::new(
                "propagation.only_to",
                "must list at least one host (use `header` for every destination)",
            ));
        }
        let name = self
            .ms
            .as_ref()
            .map_or(DEFAULT_TIMEOUT_HEADER, |ms| ms.name.clone());
        self.ms = Some(Arc::new(MsHeader {
            name,
            to: Destinations::Only(patterns),
        }));
        Ok(self)
    }

    /// Never writes the milliseconds header, not even into a request marked
    /// [`PropagateDeadline::Always`].
    #[must_use]
    pub fn no_header(mut self) -> Propagation {
        self.ms = None;
        self
    }

    /// Whether gRPC requests get `grpc-timeout` (default `true`). When off, they are treated as
    /// plain HTTP requests, and no `content-type` is looked up.
    #[must_use]
    pub fn grpc(mut self, enabled: bool) -> Propagation {
        self.grpc = enabled;
        self
    }

    /// The safety margin subtracted from the time left (default 10 ms).
    #[must_use]
    pub fn margin(mut self, margin: Duration) -> Propagation {
        self.margin = margin;
        self
    }

    /// The configured margin.
    pub fn margin_value(&self) -> Duration {
        self.margin
    }

    /// The milliseconds header's name, unless it is never written ([`no_header`](Self::no_header),
    /// [`disabled`](Self::disabled)). Whether a given request gets it depends on its destination
    /// and its [`PropagateDeadline`].
    pub fn header_name(&self) -> Option<&HeaderName> {
        self.ms.as_deref().map(|ms| &ms.name)
    }

    /// Whether anything may be written at all.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.ms.is_some() || self.grpc
    }

    /// Rejects a margin that leaves no budget under `timeout`.
    pub(crate) fn validate_against(
        &self,
        timeout: Duration,
        rule: &'static str,
    ) -> Result<(), crate::ConfigError> {
        if self.is_enabled() && self.margin.saturating_add(MIN_PROPAGATED) > timeout {
            return Err(crate::ConfigError::new("propagation.margin", rule));
        }
        Ok(())
    }

    /// Writes `time_left` minus the margin into `req`, if this request is to get a header at all.
    ///
    /// Fails with timed out (deadline) in phase [`Local`](Phase::Local) when a header is to be
    /// written and less than [`MIN_PROPAGATED`] would be left: the callee could not finish in
    /// time, so the request is not sent.
    pub fn apply<B>(&self, req: &mut Request<B>, time_left: Duration) -> Result<(), Error> {
        let now = Instant::now();
        self.write(req, now + time_left, now)
            .map_err(Error::from_failure)
    }

    /// [`apply`](Self::apply) for the layers, which already read the clock; the subtraction is
    /// skipped when nothing is written.
    #[inline]
    pub(crate) fn write<B>(
        &self,
        req: &mut Request<B>,
        until: Instant,
        now: Instant,
    ) -> Result<(), Failure> {
        if !self.is_enabled() {
            return Ok(());
        }
        let Some(target) = self.target(req) else {
            return Ok(());
        };
        let budget = until
            .saturating_duration_since(now)
            .saturating_sub(self.margin);
        if budget < MIN_PROPAGATED {
            return Err(Failure::new(Kind::TimedOut(Timer::Deadline), Phase::Local));
        }
        match target {
            Target::Grpc => write_if_shorter(req, GRPC_TIMEOUT, budget, parse_grpc_timeout, || {
                format_grpc_timeout(budget)
            }),
            Target::Ms(name) => {
                write_if_shorter(req, name.clone(), budget, parse_timeout_ms, || {
                    format_timeout_ms(budget)
                })
            }
        }
        Ok(())
    }

    /// Which header `req` gets, if any. At most one header lookup (`content-type`, and only with
    /// gRPC on) and one extension lookup (free when the request has no extensions); the
    /// destination is matched only when a list is configured.
    #[inline]
    fn target<B>(&self, req: &Request<B>) -> Option<Target<'_>> {
        let forced = || req.extensions().get::<PropagateDeadline>().copied();
        if self.grpc && is_grpc(req) {
            return (forced() != Some(PropagateDeadline::Never)).then_some(Target::Grpc);
        }
        let ms = self.ms.as_deref()?;
        let wanted = match forced() {
            Some(PropagateDeadline::Always) => true,
            Some(PropagateDeadline::Never) => false,
            None => match &ms.to {
                Destinations::Marked => false,
                Destinations::Everywhere => true,
                Destinations::Only(patterns) => matches_destination(patterns, req),
            },
        };
        wanted.then_some(Target::Ms(&ms.name))
    }

    /// The header values for a whole `timeout` left, formatted once when a layer is built (`None`
    /// when nothing is written, or when the margin leaves less than [`MIN_PROPAGATED`], which
    /// [`write`](Self::write) decides per request). A deadline that has not started yet has all of
    /// its timeout left, so its headers are always these: writing them clones a shared value
    /// instead of formatting and allocating a new one per call.
    pub(crate) fn prepare(&self, timeout: Duration) -> Option<Prepared> {
        let budget = timeout.saturating_sub(self.margin);
        if !self.is_enabled() || budget < MIN_PROPAGATED {
            return None;
        }
        let ms = self.ms.is_some().then(|| {
            let mut value = format_timeout_ms(budget);
            shareable(&mut value);
            value
        });
        let grpc = self.grpc.then(|| {
            let mut value = format_grpc_timeout(budget);
            shareable(&mut value);
            value
        });
        Some(Prepared { budget, ms, grpc })
    }

    /// Writes the prepared values (the whole timeout left) into `req`, if it is to get a header.
    #[inline]
    pub(crate) fn write_prepared<B>(&self, req: &mut Request<B>, prepared: &Prepared) {
        match (self.target(req), &prepared.grpc, &prepared.ms) {
            (Some(Target::Grpc), Some(grpc), _) => write_if_shorter(
                req,
                GRPC_TIMEOUT,
                prepared.budget,
                parse_grpc_timeout,
                || grpc.clone(),
            ),
            (Some(Target::Ms(name)), _, Some(value)) => {
                write_if_shorter(req, name.clone(), prepared.budget, parse_timeout_ms, || {
                    value.clone()
                });
            }
            // Prepared from this same configuration: whatever the target, its value is there.
            _ => {}
        }
    }
}

/// Header values formatted once for a fixed budget; see [`Propagation::prepare`].
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    budget: Duration,
    ms: Option<HeaderValue>,
    grpc: Option<HeaderValue>,
}

/// Makes later clones of `value` share its bytes (a reference count) instead of copying them:
/// `Bytes` built from a `Vec` switches to shared storage on its first clone, so that clone is done
/// here, once, rather than on the first call.
fn shareable(value: &mut HeaderValue) {
    let shared = value.clone();
    *value = shared;
}

fn write_if_shorter<B>(
    req: &mut Request<B>,
    name: HeaderName,
    budget: Duration,
    parse: fn(&HeaderValue) -> Incoming,
    value: impl FnOnce() -> HeaderValue,
) {
    // One lookup for both the check and the write.
    match req.headers_mut().entry(name) {
        http::header::Entry::Occupied(mut entry) => {
            if let Incoming::Timeout(already) = parse(entry.get())
                && already <= budget
            {
                return;
            }
            entry.insert(value());
        }
        http::header::Entry::Vacant(entry) => {
            entry.insert(value());
        }
    }
}
