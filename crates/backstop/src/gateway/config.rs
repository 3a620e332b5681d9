//! [`RouteConfig`]: one route as written in the configuration, and its per-route choices
//! ([`ForwardedHeaders`], [`BreakerCounts`]).

use backstop_breaker::{Verdict, default_verdict};
use backstop_classify::{Kind, Outcome};

use crate::policy::Policy;

/// One route as written in the configuration.
///
/// ```toml
/// [[route]]
/// prefix = "/payments"            # matched at a segment boundary, after path normalisation
/// methods = ["POST"]              # empty or absent: every method
/// upstream = "http://127.0.0.1:9001/api/v2"   # a base path is put before the forwarded path
/// strip_prefix = false            # true: /payments/charge is forwarded as /api/v2/charge
/// forwarded = "x-forwarded"       # or "rfc7239" (a `Forwarded` header), or "none"
/// trust_forwarded = false         # true: the previous hop is a trusted proxy; append to its headers
/// breaker_counts = "gateway-errors"  # or "5xx"
/// body_limit = "1MiB"             # largest request body accepted (bytes, or "64KiB", "64MiB"…)
/// [route.policy]
/// deadline = "2s"
/// attempt_timeout = "1s"
/// retry = { max_attempts = 1 }
/// ```
///
/// Rejected at load, naming the route and the field (e.g. `route /payments.upstream`): a prefix
/// not in normal form (it could never match a normalised path), two routes with the same prefix
/// and overlapping methods, an upstream that is not an absolute `http`/`https` URL, or one that
/// carries credentials (`user:pass@`) or a query, a `body_limit` that is not a size.
///
/// Request bodies are streamed to the upstream, never collected first. A request the route may
/// retry (more than one attempt, an idempotent method or an `Idempotency-Key`) keeps the first
/// `policy.retry.replay_limit` bytes of its body (default 64 KiB) for replay, reserved from the
/// gateway's buffer budget (see [`Gateway`](super::Gateway)); a larger body is sent once, without
/// replay. Note that the route's deadline and attempt timeout then also bound the upload.
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct RouteConfig {
    /// The path prefix it serves, starting with `/`; the longest matching prefix wins. It
    /// matches at a segment boundary: `/catalog` serves `/catalog`, `/catalog/` and
    /// `/catalog/x`, not `/catalogue-admin`. A trailing `/` is ignored.
    pub prefix: String,
    /// The methods it serves; empty means all.
    #[cfg_attr(feature = "config", serde(default))]
    pub methods: Vec<String>,
    /// The upstream's base URL (`http://host:port` or `https://…`, optionally with a base path
    /// such as `/api/v2`): the base path, then the request's normalised path (without the
    /// prefix when `strip_prefix`), then its query are forwarded.
    pub upstream: String,
    /// Remove the route's prefix from the forwarded path. Default `false`.
    #[cfg_attr(feature = "config", serde(default))]
    pub strip_prefix: bool,
    /// Which forwarding headers the gateway writes. Default `x-forwarded`.
    #[cfg_attr(feature = "config", serde(default))]
    pub forwarded: ForwardedHeaders,
    /// Whether the previous hop is a trusted proxy. Default `false`: forwarding headers a
    /// client sent (`X-Forwarded-*`, `Forwarded`) are dropped and replaced, since anyone can
    /// write them. `true`: they are kept and the gateway's hop is appended.
    #[cfg_attr(feature = "config", serde(default))]
    pub trust_forwarded: bool,
    /// What the route's circuit breaker counts as the upstream being sick. Default
    /// `gateway-errors`.
    #[cfg_attr(feature = "config", serde(default))]
    pub breaker_counts: BreakerCounts,
    /// The largest request body the route accepts, in bytes (inclusive); in TOML a number or a
    /// string with a unit: `"512KiB"`, `"64MiB"`, `"1GiB"` (`B`, `KiB`, `MiB`, `GiB`). Default
    /// [`DEFAULT_BODY_LIMIT`] (64 MiB). Counted on the bytes received, as they stream: a
    /// `Content-Length` above it is answered `413` (`RB`) before the body is read; a body that
    /// grows past it makes the forward fail, answered `413` unless the upstream already answered
    /// (which may then have seen part of the body, as behind nginx).
    #[cfg_attr(
        feature = "config",
        serde(default = "default_body_limit", deserialize_with = "size::deserialize")
    )]
    pub body_limit: u64,
    /// The route's client policy; every field defaults as in [`Policy`].
    #[cfg_attr(feature = "config", serde(default))]
    pub policy: Policy,
}

/// A route's default [`RouteConfig::body_limit`]: 64 MiB.
pub const DEFAULT_BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// The gateway's default budget of request-body bytes held for replay, across all requests:
/// 256 MiB (4096 replay buffers of the default 64 KiB). See
/// [`Gateway::with_buffer_budget`](super::Gateway::with_buffer_budget).
pub const DEFAULT_BUFFER_BUDGET: u64 = 256 * 1024 * 1024;

#[cfg(feature = "config")]
fn default_body_limit() -> u64 {
    DEFAULT_BODY_LIMIT
}

/// Sizes in bytes as configuration writes them: a number, or a string with an IEC unit.
#[cfg(feature = "config")]
pub(crate) mod size {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, Visitor};

    /// Parses `"64MiB"`, `"512 KiB"`, `"1024"`, `"10B"`. Decimal units (`MB`, `KB`) are refused
    /// rather than guessed: they mean powers of ten to some readers and of two to others.
    pub(crate) fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "{other:?} is not a size unit: write bytes, or use B, KiB, MiB or GiB                      (e.g. \"64MiB\")"
                ));
            }
        };
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a size (e.g. 65536 or \"64MiB\")"))?;
        number
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{text:?} is too large"))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
        de.deserialize_any(SizeVisitor)
    }

    pub(crate) fn deserialize_option<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<u64>, D::Error> {
        de.deserialize_any(SizeVisitor).map(Some)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size: a number of bytes, or a string such as \"64MiB\"")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative: not a size")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse(v).map_err(E::custom)
        }
    }
}

impl RouteConfig {
    /// A route serving `prefix` (every method) from `upstream`, with every other setting at
    /// its default.
    pub fn new(prefix: impl Into<String>, upstream: impl Into<String>) -> RouteConfig {
        RouteConfig {
            prefix: prefix.into(),
            methods: Vec::new(),
            upstream: upstream.into(),
            strip_prefix: false,
            forwarded: ForwardedHeaders::default(),
            trust_forwarded: false,
            breaker_counts: BreakerCounts::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            policy: Policy::default(),
        }
    }
}

/// The forwarding headers a route writes, telling the upstream who the client was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum ForwardedHeaders {
    /// `X-Forwarded-For` (the client's IP), `X-Forwarded-Proto` (`http`, or the scheme of an
    /// absolute request URI) and `X-Forwarded-Host` (the `Host` the client asked for). The
    /// default: what most frameworks read.
    #[default]
    XForwarded,
    /// RFC 7239 `Forwarded: for=…;proto=…;host=…` (`for=unknown` when the client's address is
    /// not known).
    Rfc7239,
    /// Neither (a client's own are still dropped unless `trust_forwarded`).
    None,
}

/// What a route's circuit breaker counts as a failure of its upstream.
///
/// A gateway's upstream that answers `500` for one bad request is not down; one that cannot be
/// reached, times out, or answers `502`/`503`/`504` (itself a proxy saying *its* upstream is
/// down, or an overloaded server) is. Envoy's outlier detection keeps the same two counts apart
/// ("consecutive gateway errors" and "consecutive 5xx").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum BreakerCounts {
    /// Connect failures, timeouts, resets and `502`/`503`/`504` (and what the breaker counts
    /// by default beside HTTP statuses: gRPC `UNAVAILABLE`…, `429` toward the rate); other
    /// `5xx` are answers. The default.
    #[default]
    GatewayErrors,
    /// Every `5xx` too, as a plain [`Client`](crate::Client) counts.
    #[cfg_attr(feature = "config", serde(rename = "5xx"))]
    ServerErrors,
}

impl BreakerCounts {
    /// The breaker's judgement for this choice.
    pub(crate) fn judge(self) -> backstop_breaker::Judge {
        match self {
            BreakerCounts::GatewayErrors => gateway_errors,
            BreakerCounts::ServerErrors => default_verdict,
        }
    }
}

/// [`default_verdict`], except that a `5xx` other than `502`/`503`/`504` is an answer.
fn gateway_errors(outcome: &Outcome) -> Verdict {
    if let Outcome::Failure(failure) = outcome
        && let Kind::Status(status) = failure.kind()
        && status.is_server_error()
        && !matches!(status.as_u16(), 502..=504)
    {
        return Verdict::Success;
    }
    default_verdict(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_classify::{Failure, Phase};
    use http::StatusCode;

    #[cfg(feature = "config")]
    #[test]
    fn sizes_are_bytes_or_iec_units() {
        assert_eq!(size::parse("1024"), Ok(1024));
        assert_eq!(size::parse("10B"), Ok(10));
        assert_eq!(size::parse("64KiB"), Ok(64 * 1024));
        assert_eq!(size::parse(" 64 MiB "), Ok(64 * 1024 * 1024));
        assert_eq!(size::parse("2GiB"), Ok(2 << 30));
        for bad in [
            "64MB",
            "64k",
            "MiB",
            "",
            "-1",
            "1.5MiB",
            "99999999999999999999GiB",
        ] {
            assert!(size::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gateway_errors_count_502_to_504_and_transport_failures_only() {
        let status = |code| {
            Outcome::Failure(Failure::new(
                Kind::Status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK)),
                Phase::AwaitHeaders,
            ))
        };
        for code in [500, 501, 505, 599] {
            assert_eq!(gateway_errors(&status(code)), Verdict::Success, "{code}");
            assert_eq!(default_verdict(&status(code)), Verdict::Failure, "{code}");
        }
        for code in [502, 503, 504] {
            assert_eq!(gateway_errors(&status(code)), Verdict::Failure, "{code}");
        }
        let refused = Outcome::Failure(Failure::new(Kind::Refused, Phase::Connect));
        assert_eq!(gateway_errors(&refused), Verdict::Failure);
        assert_eq!(gateway_errors(&Outcome::Success), Verdict::Success);
    }
}
