//! The shared failure vocabulary of backstop: *what* failed ([`Kind`]), *where* ([`Phase`]), and
//! *whether a retry is safe* ([`Retryable`]).
//!
//! Every other backstop layer reads this vocabulary. Retry decides from [`Retryable`], the
//! circuit breaker from [`Kind`], metrics and logs print [`Kind::explanation`] and
//! [`Kind::next_step`].
//!
//! ```
//! use backstop_classify::{Error, Kind, Phase, Retryable};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Nothing listens on a port we just released: the OS refuses the connection.
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! drop(listener);
//! let io_err = tokio::net::TcpStream::connect(addr).await.unwrap_err();
//!
//! let err = Error::from_io(io_err, Phase::Connect);
//! assert_eq!(err.kind(), Kind::Refused);
//! assert_eq!(err.phase(), Phase::Connect);
//! // The request never left: any method, even POST, may be sent again.
//! assert_eq!(err.retryable(), Retryable::Safe);
//! println!("{err}\n  why: {}\n  next: {}", err.kind().explanation(), err.kind().next_step());
//! # }
//! ```
//!
//! # The pieces
//! - [`Failure`]: kind + phase + retryable + the server's `Retry-After`; `Copy`, 24 bytes.
//! - [`Error`]: a `Failure` with the original error kept as `source()`; every backstop layer fails
//!   with it. [`classify_error`] maps std and tokio errors, and hyper, hyper-util, h2 and rustls
//!   errors with the features below.
//! - [`Classify`]: the policy turning responses (status, headers, gRPC status and trailers) and
//!   errors into an [`Outcome`]; [`HttpPolicy`] and [`GrpcPolicy`] are the defaults.
//! - [`ClassifyLayer`]: a tower layer that does the above once and stores the [`Outcome`] in the
//!   response extensions.
//! - [`parse_retry_after`], [`parse_grpc_pushback`]: untrusted headers, parsed without panics.
//! - [`Kind::grpc_code`]: the gRPC status a failure stands for, for a gRPC stack (tonic) that
//!   hands its caller a status. tonic's own `grpc-timeout` expiry ("Timeout expired", which its
//!   `Channel` enforces on every request carrying the header) is classified as the deadline.
//!
//! # Features
//!
//! All off by default, so that the vocabulary alone stays small. Each maps one library's errors
//! precisely; without it, that library's errors are still classified from their `io::Error`
//! sources and messages, less precisely. Turn on the features of the libraries your stack uses
//! (the `backstop` facade does).
//!
//! | feature | maps | pulls in |
//! |---|---|---|
//! | `hyper` | `hyper::Error`: incomplete message, parse, header timeout, canceled (never sent), closed | hyper |
//! | `hyper-util` | the legacy client's `Error`: `is_connect()`, the request handed back unsent; implies `hyper` | hyper-util (`client-legacy`, `http1`) |
//! | `h2` | `REFUSED_STREAM` and the peer's `GOAWAY`: never processed, safe to retry | h2 |
//! | `rustls` | certificate and handshake failures | rustls (no crypto provider) |

mod config;
mod error;
mod failure;
mod kind;
mod layer;
mod map;
mod policy;
mod retry_after;
pub mod telemetry;

pub use config::ConfigError;
pub use error::{BoxError, Error};
pub use failure::{Failure, Outcome, Phase, Retryable};
pub use kind::{GrpcCode, Kind, ProtocolFailure, Timer, TlsFailure};
pub use layer::{ClassifiedBody, ClassifyLayer, ClassifyService, ResponseFuture, TrailerOutcome};
pub use map::classify_error;
pub use policy::{Classify, GrpcPolicy, HttpPolicy};
pub use retry_after::{DEFAULT_RETRY_AFTER_CAP, Pushback, parse_grpc_pushback, parse_retry_after};
