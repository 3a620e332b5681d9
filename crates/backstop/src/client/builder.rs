//! [`ClientBuilder`]: every setting of a [`Client`], validated when it is built.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hyper_util::client::legacy::connect::dns::GaiResolver;

use backstop_timeout::{TcpConnector, TcpConnectorBuilder};

use super::scheme::Schemes;
use super::{Client, FnResolver};
use crate::policy::{BudgetPolicy, ConfigError, JitterMode, Policy, PropagationPolicy};

/// Builds a [`Client`]. Every setting starts at the documented default of [`Policy`]; `build`
/// validates them all and names the field of the first one that breaks a rule.
pub struct ClientBuilder {
    policy: Policy,
    #[cfg(feature = "tls")]
    tls: Option<rustls::ClientConfig>,
    https_only: bool,
    resolver: Option<FnResolver>,
    seed: Option<u64>,
    judge: Option<backstop_breaker::Judge>,
    /// hyper's HTTP/1 buffer bound, when not its default (about 400 KiB).
    http1_max_buf_size: Option<usize>,
    http2_prior_knowledge: bool,
    tcp: TcpSettings,
}

/// The TCP connector's settings, applied to [`TcpConnector`]'s builder when the client is built
/// (which validates them).
#[derive(Debug, Clone)]
pub(super) struct TcpSettings {
    nodelay: bool,
    happy_eyeballs_timeout: Option<Duration>,
    keepalive: Option<Duration>,
    keepalive_interval: Option<Duration>,
    keepalive_retries: Option<u32>,
    local_v4: Option<Ipv4Addr>,
    local_v6: Option<Ipv6Addr>,
    #[cfg(target_os = "linux")]
    interface: Option<String>,
    #[cfg(target_os = "linux")]
    user_timeout: Option<Duration>,
    send_buffer_size: Option<usize>,
    recv_buffer_size: Option<usize>,
}

impl Default for TcpSettings {
    fn default() -> TcpSettings {
        TcpSettings {
            nodelay: true,
            happy_eyeballs_timeout: None,
            keepalive: None,
            keepalive_interval: None,
            keepalive_retries: None,
            local_v4: None,
            local_v6: None,
            #[cfg(target_os = "linux")]
            interface: None,
            #[cfg(target_os = "linux")]
            user_timeout: None,
            send_buffer_size: None,
            recv_buffer_size: None,
        }
    }
}

impl TcpSettings {
    /// `builder` with these settings; its `build` then checks them. A rejected setting is named
    /// as the facade's setter names it.
    pub(super) fn build<R>(
        &self,
        builder: TcpConnectorBuilder<R>,
    ) -> Result<TcpConnector<R>, ConfigError> {
        let mut builder = builder.nodelay(self.nodelay);
        if let Some(delay) = self.happy_eyeballs_timeout {
            builder = builder.attempt_delay(delay);
        }
        if let Some(idle) = self.keepalive {
            builder = builder.keepalive(idle);
        }
        if let Some(interval) = self.keepalive_interval {
            builder = builder.keepalive_interval(interval);
        }
        if let Some(retries) = self.keepalive_retries {
            builder = builder.keepalive_retries(retries);
        }
        if let Some(v4) = self.local_v4 {
            builder = builder.local_address(IpAddr::V4(v4));
        }
        if let Some(v6) = self.local_v6 {
            builder = builder.local_address(IpAddr::V6(v6));
        }
        #[cfg(target_os = "linux")]
        if let Some(name) = &self.interface {
            builder = builder.interface(name.clone());
        }
        #[cfg(target_os = "linux")]
        if let Some(timeout) = self.user_timeout {
            builder = builder.tcp_user_timeout(timeout);
        }
        if let Some(bytes) = self.send_buffer_size {
            builder = builder.send_buffer_size(bytes);
        }
        if let Some(bytes) = self.recv_buffer_size {
            builder = builder.recv_buffer_size(bytes);
        }
        builder.build().map_err(|err| {
            let field = match err.field() {
                "attempt_delay" => "happy_eyeballs_timeout",
                "keepalive" => "tcp_keepalive",
                "keepalive_interval" => "tcp_keepalive_interval",
                "keepalive_retries" => "tcp_keepalive_retries",
                "send_buffer_size" => "tcp_send_buffer_size",
                "recv_buffer_size" => "tcp_recv_buffer_size",
                // `interface`, `tcp_user_timeout`: the same name on both builders.
                other => return ConfigError::new(other.to_owned(), err.rule().to_owned()),
            };
            ConfigError::new(field, err.rule().to_owned())
        })
    }
}

/// The builder's settings that are not part of a [`Policy`]: they shape the transport, not the
/// rules.
pub(super) struct Transport {
    /// The TLS configuration of `https://` connections.
    #[cfg(feature = "tls")]
    pub(super) tls: rustls::ClientConfig,
    pub(super) seed: Option<u64>,
    pub(super) judge: Option<backstop_breaker::Judge>,
    pub(super) http1_max_buf_size: Option<usize>,
    pub(super) http2_prior_knowledge: bool,
    pub(super) tcp: TcpSettings,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClientBuilder");
        d.field("policy", &self.policy);
        #[cfg(feature = "tls")]
        d.field("custom_tls", &self.tls.is_some());
        d.field("https_only", &self.https_only)
            .field("custom_resolver", &self.resolver.is_some())
            .field("custom_breaker_judge", &self.judge.is_some())
            .field("http1_max_buf_size", &self.http1_max_buf_size)
            .field("http2_prior_knowledge", &self.http2_prior_knowledge)
            .field("tcp", &self.tcp)
            .finish()
    }
}

impl ClientBuilder {
    /// A builder with the documented defaults (see [`Client::builder`]).
    pub(super) fn new() -> ClientBuilder {
        ClientBuilder {
            policy: Policy::default(),
            #[cfg(feature = "tls")]
            tls: None,
            https_only: false,
            resolver: None,
            seed: None,
            judge: None,
            http1_max_buf_size: None,
            http2_prior_knowledge: false,
            tcp: TcpSettings::default(),
        }
    }

    /// Applies `policy` (e.g. one loaded from configuration) on top of the settings so far.
    ///
    /// Settings compose in call order: every field `policy` sets to something other than its
    /// default replaces what earlier calls set; the fields it leaves at their defaults keep
    /// them; setters called afterwards override it. So
    /// `builder().max_attempts(1).policy(from_toml)` keeps one attempt unless the TOML names
    /// `retry.max_attempts`, and `builder().policy(p).seed(7)` is `p` plus a seed.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy.overlay(policy);
        self
    }

    /// The ceiling over the whole call, retries and backoff included. Default 30 s.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = deadline;
        self
    }

    /// Whether the deadline also bounds reading the response body, until its end. Default on.
    #[must_use]
    pub fn deadline_covers_body(mut self, covers: bool) -> Self {
        self.policy.deadline_covers_body = covers;
        self
    }

    /// The bound on one attempt. Unset, it follows the deadline: 10 s, or the deadline when that
    /// is shorter. Set, it must not exceed the deadline.
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.policy.attempt_timeout = Some(timeout);
        self
    }

    /// The bound on establishing a connection (DNS + TCP + TLS). Default 5 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.policy.connect_timeout = timeout;
        self
    }

    /// The idle bound on connections and response bodies. Default 30 s.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.policy.idle_timeout = timeout;
        self
    }

    /// Attempts per request, the first included (1 = never retry). Default 3.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.retry.max_attempts = attempts;
        self
    }

    /// The first and the longest backoff delay. Defaults 50 ms and 5 s.
    #[must_use]
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.policy.retry.base_delay = base;
        self.policy.retry.max_delay = max;
        self
    }

    /// How backoff delays are randomised. Default [`JitterMode::Full`].
    #[must_use]
    pub fn jitter(mut self, jitter: JitterMode) -> Self {
        self.policy.retry.jitter = jitter;
        self
    }

    /// The longest server `Retry-After` (or gRPC pushback) honoured; a server asking for longer
    /// is not retried, and its response is returned. Default 30 s.
    #[must_use]
    pub fn retry_after_max(mut self, max: Duration) -> Self {
        self.policy.retry.retry_after_max = max;
        self
    }

    /// The largest request body kept for replay, in bytes. Default 64 KiB.
    #[must_use]
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.policy.retry.replay_limit = bytes;
        self
    }

    /// Attach a fresh `Idempotency-Key` to non-idempotent requests so they may be retried.
    /// Default off: the server must understand the header.
    #[must_use]
    pub fn attach_idempotency_key(mut self, attach: bool) -> Self {
        self.policy.retry.attach_idempotency_key = attach;
        self
    }

    /// Retry 409 Conflict for requests that may be retried at all. Default off.
    #[must_use]
    pub fn retry_conflict(mut self, retry: bool) -> Self {
        self.policy.retry.retry_conflict = retry;
        self
    }

    /// The retry budget (default 20 % of requests + 10/s over 10 s; `enabled: false` turns it
    /// off).
    #[must_use]
    pub fn retry_budget(mut self, budget: BudgetPolicy) -> Self {
        self.policy.retry.budget = budget;
        self
    }

    /// Turns the circuit breakers on or off. Default on, one per host.
    #[must_use]
    pub fn breaker(mut self, enabled: bool) -> Self {
        self.policy.breaker.enabled = enabled;
        self
    }

    /// Consecutive failed attempts that open a host's breaker. Default 5.
    #[must_use]
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.policy.breaker.consecutive_failures = failures;
        self
    }

    /// The failure rate that opens a breaker, over the last `window_calls` attempts once it holds
    /// `minimum_calls`. Defaults 0.5, 100 and 20.
    #[must_use]
    pub fn failure_rate(mut self, rate: f64, window_calls: u32, minimum_calls: u32) -> Self {
        self.policy.breaker.failure_rate = rate;
        self.policy.breaker.window_calls = window_calls;
        self.policy.breaker.minimum_calls = minimum_calls;
        self
    }

    /// The first cool-down of an open breaker and the longest after repeated trips. Defaults
    /// 5 s and 300 s.
    #[must_use]
    pub fn open_for(mut self, first: Duration, max: Duration) -> Self {
        self.policy.breaker.open_for = first;
        self.policy.breaker.max_open_for = max;
        self
    }

    /// Probes a half-open breaker lets through. Default 1.
    #[must_use]
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.policy.breaker.half_open_probes = probes;
        self
    }

    /// Allow a policy in which one call's own retries can open its host's breaker (the breaker
    /// counts attempts). Default off: such a policy is rejected at build.
    #[must_use]
    pub fn single_call_may_trip(mut self, allow: bool) -> Self {
        self.policy.breaker.single_call_may_trip = allow;
        self
    }

    /// Where the time left before the deadline is written into requests. Default: `grpc-timeout`
    /// on gRPC requests, nothing on plain HTTP ones.
    #[must_use]
    pub fn propagation(mut self, propagation: PropagationPolicy) -> Self {
        self.policy.propagation = propagation;
        self
    }

    /// The TLS configuration (with the `tls` feature). Default: TLS 1.2 and 1.3, the crypto
    /// provider and the roots the crate features choose (see [the crate docs](crate#features):
    /// the process default provider or the one compiled in, the Mozilla roots by default).
    ///
    /// Build it with the crypto provider named, e.g.
    /// `rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))`:
    /// `rustls::ClientConfig::builder()` panics when the application compiles in both of
    /// rustls' providers (`ring` and `aws-lc-rs`) and none was installed as the process default.
    ///
    /// ALPN: leave `alpn_protocols` empty and the client offers `h2` then `http/1.1`, speaking
    /// whichever the server picks. A non-empty list is honoured as given — exactly those
    /// protocols, in that order — so `vec![b"h2".to_vec()]` offers HTTP/2 alone and
    /// `vec![b"http/1.1".to_vec()]` HTTP/1.1 alone (a server that picks none is spoken to in
    /// HTTP/1.1, as TLS allows). Any entry other than `h2` and `http/1.1`, or one listed twice,
    /// makes [`build`](ClientBuilder::build) return a [`ConfigError`] naming
    /// `tls.alpn_protocols`: the client could not speak it if the server chose it.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Refuse `http://` URLs: every call must be `https://` (as reqwest's `https_only`).
    /// Default off.
    ///
    /// A refused call fails at once with a classified [`Error`](crate::Error) (`Kind::Other`,
    /// `Phase::Local`, never retried), before anything is sent. Built without TLS (no `tls`
    /// feature), `https_only(true)` could never make a call: [`build`](ClientBuilder::build)
    /// returns a [`ConfigError`] naming `https_only`.
    #[must_use]
    pub fn https_only(mut self, enabled: bool) -> Self {
        self.https_only = enabled;
        self
    }

    /// The DNS resolver (default: the system's `getaddrinfo`).
    #[must_use]
    pub fn resolver(mut self, resolver: FnResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// How the breakers judge an outcome: what counts as a failure of the destination. Default
    /// [`backstop_breaker::default_verdict`] (every `5xx`, timeouts, connect failures…). The
    /// gateway (the `gateway` feature) uses it for a route's `breaker_counts`.
    #[must_use]
    pub fn breaker_judge(mut self, judge: backstop_breaker::Judge) -> Self {
        self.judge = Some(judge);
        self
    }

    /// Seeds the jitter and the breakers' randomness, for reproducible tests and demos.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Speak HTTP/2 on every connection, `http://` ones included (h2c with prior knowledge), as
    /// gRPC servers and HTTP/2-only upstreams expect. Default off: HTTP/2 where TLS's ALPN
    /// negotiates it, HTTP/1.1 otherwise.
    #[must_use]
    pub fn http2_prior_knowledge(mut self, enabled: bool) -> Self {
        self.http2_prior_knowledge = enabled;
        self
    }

    /// Sets `TCP_NODELAY` on every connection (as reqwest's `tcp_nodelay`). Default on: small
    /// requests are sent at once instead of waiting on Nagle's algorithm.
    #[must_use]
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.tcp.nodelay = enabled;
        self
    }

    /// How long one address is tried alone before the next of the host's addresses is tried
    /// alongside it (happy eyeballs, RFC 8305; hyper-util's `set_happy_eyeballs_timeout`).
    /// Default 250 ms; 1 ms up to the per-address attempt bound (2 s).
    #[must_use]
    pub fn happy_eyeballs_timeout(mut self, delay: Duration) -> Self {
        self.tcp.happy_eyeballs_timeout = Some(delay);
        self
    }

    /// Turns TCP keep-alive on, the first probe after `idle` without traffic (as reqwest's
    /// `tcp_keepalive`; 1 s to 32,767 s). Default off: pooled connections are dropped after
    /// 90 s idle anyway, and [`idle_timeout`](Self::idle_timeout) bounds a silent one in use.
    /// Keep-alive helps where a NAT or firewall forgets a quiet connection sooner.
    #[must_use]
    pub fn tcp_keepalive(mut self, idle: Duration) -> Self {
        self.tcp.keepalive = Some(idle);
        self
    }

    /// The time between keep-alive probes (1 s to 32,767 s); needs
    /// [`tcp_keepalive`](Self::tcp_keepalive). Default: the system's.
    #[must_use]
    pub fn tcp_keepalive_interval(mut self, interval: Duration) -> Self {
        self.tcp.keepalive_interval = Some(interval);
        self
    }

    /// Unanswered keep-alive probes before a connection is dropped (1 to 127); needs
    /// [`tcp_keepalive`](Self::tcp_keepalive). Default: the system's.
    #[must_use]
    pub fn tcp_keepalive_retries(mut self, retries: u32) -> Self {
        self.tcp.keepalive_retries = Some(retries);
        self
    }

    /// Connects from `ip` (as reqwest's `local_address`): to destinations of its family; the
    /// other family connects from wherever the system routes it. Call it with an IPv4 and an
    /// IPv6 address to set both. Default: the system chooses.
    #[must_use]
    pub fn local_address(mut self, ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => self.tcp.local_v4 = Some(v4),
            IpAddr::V6(v6) => self.tcp.local_v6 = Some(v6),
        }
        self
    }

    /// Binds every connection to the network device `name` (`SO_BINDTODEVICE`, Linux only, as
    /// reqwest's `interface`; 1 to 15 bytes). Default: any device.
    #[cfg(target_os = "linux")]
    #[must_use]
    pub fn interface(mut self, name: impl Into<String>) -> Self {
        self.tcp.interface = Some(name.into());
        self
    }

    /// `TCP_USER_TIMEOUT` (Linux only, as reqwest's `tcp_user_timeout`): how long written data
    /// may stay unacknowledged before the kernel drops the connection (1 ms to 24 h). Default:
    /// the system's (about 15 minutes of retransmissions).
    #[cfg(target_os = "linux")]
    #[must_use]
    pub fn tcp_user_timeout(mut self, timeout: Duration) -> Self {
        self.tcp.user_timeout = Some(timeout);
        self
    }

    /// `SO_SNDBUF` of every connection, in bytes (the kernel doubles and clamps it). Default:
    /// the system's, which auto-tunes.
    #[must_use]
    pub fn tcp_send_buffer_size(mut self, bytes: usize) -> Self {
        self.tcp.send_buffer_size = Some(bytes);
        self
    }

    /// `SO_RCVBUF` of every connection, in bytes (the kernel doubles and clamps it). Default:
    /// the system's, which auto-tunes.
    #[must_use]
    pub fn tcp_recv_buffer_size(mut self, bytes: usize) -> Self {
        self.tcp.recv_buffer_size = Some(bytes);
        self
    }

    /// Bounds hyper's HTTP/1 read buffer and write queue per connection (at least 8 KiB).
    ///
    /// The gateway streams request bodies through its route clients: each chunk queued for the
    /// upstream is a slice of the client connection's read buffer, and keeps that whole buffer
    /// allocated while it waits. A short queue bounds what each upload pins.
    #[cfg(feature = "gateway")]
    pub(crate) fn http1_max_buf_size(mut self, bytes: usize) -> Self {
        self.http1_max_buf_size = Some(bytes.max(8 * 1024));
        self
    }

    /// The policy as set so far (the gateway reads the retry rules that decide what a route
    /// keeps for replay).
    #[cfg(feature = "gateway")]
    pub(crate) fn current_policy(&self) -> &Policy {
        &self.policy
    }

    /// Validates every setting and builds the client.
    ///
    /// Never panics: a setting that breaks a rule, the TLS configuration included (see
    /// `tls`, and [the crate docs](crate#features) for a build without a crypto provider or
    /// roots), is a [`ConfigError`] naming it.
    pub fn build(self) -> Result<Client, ConfigError> {
        let policy = self.policy;
        policy.validate()?;
        let schemes = Schemes::new(self.https_only)?;
        let transport = Transport {
            #[cfg(feature = "tls")]
            tls: match self.tls {
                Some(tls) => tls,
                None => crate::tls::default_config()?,
            },
            seed: self.seed,
            judge: self.judge,
            http1_max_buf_size: self.http1_max_buf_size,
            http2_prior_knowledge: self.http2_prior_knowledge,
            tcp: self.tcp,
        };
        match self.resolver {
            Some(resolver) => Client::assemble(&policy, resolver, transport, schemes),
            None => Client::assemble(&policy, GaiResolver::new(), transport, schemes),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Every `Policy` field can be set from the builder, and setters and `policy()` compose in
    /// call order.
    #[test]
    fn every_policy_field_is_reachable_from_the_builder() {
        let ms = Duration::from_millis;
        let budget = BudgetPolicy {
            enabled: false,
            ratio: 0.1,
            min_per_second: 3,
            window: Duration::from_secs(20),
        };
        let propagation = PropagationPolicy {
            http: true,
            header: "x-timeout-ms".into(),
            only_to: vec!["*.internal".into()],
            grpc: false,
        };
        let built = Client::builder()
            .deadline(ms(900))
            .deadline_covers_body(false)
            .attempt_timeout(ms(300))
            .connect_timeout(ms(100))
            .idle_timeout(ms(200))
            .max_attempts(4)
            .backoff(ms(10), ms(100))
            .jitter(JitterMode::Decorrelated)
            .retry_after_max(ms(500))
            .replay_limit(1024)
            .attach_idempotency_key(true)
            .retry_conflict(true)
            .retry_budget(budget.clone())
            .breaker(false)
            .consecutive_failures(9)
            .failure_rate(0.3, 50, 10)
            .open_for(ms(700), ms(7000))
            .half_open_probes(2)
            .single_call_may_trip(true)
            .propagation(propagation.clone())
            .policy;
        let expected = Policy {
            deadline: ms(900),
            deadline_covers_body: false,
            attempt_timeout: Some(ms(300)),
            connect_timeout: ms(100),
            idle_timeout: ms(200),
            retry: crate::RetryPolicy {
                max_attempts: 4,
                base_delay: ms(10),
                max_delay: ms(100),
                jitter: JitterMode::Decorrelated,
                retry_after_max: ms(500),
                replay_limit: 1024,
                attach_idempotency_key: true,
                retry_conflict: true,
                budget,
            },
            breaker: crate::BreakerPolicy {
                enabled: false,
                consecutive_failures: 9,
                failure_rate: 0.3,
                window_calls: 50,
                minimum_calls: 10,
                open_for: ms(700),
                max_open_for: ms(7000),
                half_open_probes: 2,
                single_call_may_trip: true,
            },
            propagation,
        };
        assert_eq!(built, expected);
        // Nothing in `expected` is left at its default, so the comparison covers every field.
        let mut overlaid = Policy::default();
        overlaid.overlay(expected.clone());
        assert_eq!(overlaid, expected);

        // policy() after a setter keeps the setter where the policy says nothing…
        let p = Policy {
            deadline: ms(2000),
            ..Policy::default()
        };
        let b = Client::builder().max_attempts(1).policy(p.clone());
        assert_eq!(
            (b.policy.retry.max_attempts, b.policy.deadline),
            (1, ms(2000))
        );
        // …and a setter after policy() overrides it.
        let b = Client::builder().policy(p).deadline(ms(500));
        assert_eq!(b.policy.deadline, ms(500));
    }
}
