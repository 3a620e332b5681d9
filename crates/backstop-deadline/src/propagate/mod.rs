//! Deadlines on the wire: writing the time left into outgoing requests ([`Propagation`]) and
//! reading it from incoming ones ([`parse_grpc_timeout`], [`parse_timeout_ms`]).
//!
//! The time left travels as a **relative duration**, never as an absolute time, so the two ends
//! need not agree on the clock. Two encodings:
//!
//! - `grpc-timeout` for gRPC requests (`content-type: application/grpc…`): at most 8 ASCII digits
//!   then a unit, `H` hours, `M` minutes, `S` seconds, `m` millis, `u` micros, `n` nanos. gRPC
//!   servers expect it, so it is written by default.
//! - [`DEFAULT_TIMEOUT_HEADER`], `request-timeout-ms`, for every other request: the time left in
//!   whole milliseconds, ASCII digits only, e.g. `request-timeout-ms: 1490`. The name carries its
//!   unit so nobody reads it as seconds, has no `x-` prefix (RFC 6648), and says what it is: the
//!   sender gives up on this request after that many milliseconds. Any name can be configured,
//!   e.g. Envoy's `x-envoy-expected-rq-timeout-ms`, which has the same encoding.
//!
//! Plain HTTP requests carry nothing unless asked: the header tells whoever receives it how long
//! the caller waits, which is nobody's business outside the services that read it, and costs a
//! header on every call. Turn it on for every destination ([`Propagation::header`]), for some
//! ([`Propagation::only_to`]), or for one request ([`PropagateDeadline`]).
//!
//! Incoming values are untrusted: parsing never panics, never allocates, and tells malformed
//! values (ignored) apart from zero or negative ones (the caller has already given up).
//!
//! The pieces: the wire formats ([`parse_grpc_timeout`], [`format_timeout_ms`]…, `wire.rs`), the
//! policy deciding which request gets which header ([`Propagation`], [`PropagateDeadline`],
//! `policy.rs`) and the destination patterns of [`Propagation::only_to`] (`destination.rs`).

mod destination;
mod policy;
mod wire;

pub(crate) use policy::Prepared;
pub use policy::{DEFAULT_MARGIN, MIN_PROPAGATED, PropagateDeadline, Propagation};
pub use wire::{
    DEFAULT_TIMEOUT_HEADER, GRPC_TIMEOUT, Incoming, format_grpc_timeout, format_timeout_ms,
    is_grpc, parse_grpc_timeout, parse_timeout_ms,
};
