//! The propagation section of a [`Policy`](super::Policy): [`PropagationPolicy`], and how it
//! becomes the deadline layers' [`Propagation`](backstop_deadline::Propagation).

use super::ConfigError;

/// Where the time left before the deadline is written into outgoing requests.
///
/// gRPC requests (`content-type: application/grpc…`) carry `grpc-timeout`, which gRPC servers
/// expect. Plain HTTP requests carry nothing unless `http` opts in: the header tells every
/// server how long the caller will wait, so it is for your own services, not third-party APIs.
///
/// ```toml
/// [propagation]
/// http = true                             # write request-timeout-ms on plain HTTP requests…
/// only_to = ["*.internal", "10.0.0.5:8080"] # …to these destinations only (default: all)
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields, default)
)]
pub struct PropagationPolicy {
    /// Write the milliseconds header on plain HTTP requests. Default `false`.
    pub http: bool,
    /// Its name. Default `request-timeout-ms`.
    pub header: String,
    /// The destinations that get it: host names (`api.internal`), `host:port`, or `*.suffix`
    /// wildcards; empty means every destination. Default empty.
    pub only_to: Vec<String>,
    /// Write `grpc-timeout` on gRPC requests. Default `true`.
    pub grpc: bool,
}

impl Default for PropagationPolicy {
    fn default() -> Self {
        PropagationPolicy {
            http: false,
            header: backstop_deadline::DEFAULT_TIMEOUT_HEADER
                .as_str()
                .to_owned(),
            only_to: Vec::new(),
            grpc: true,
        }
    }
}

impl PropagationPolicy {
    /// The deadline layer's propagation rule, or the field that is invalid.
    pub(crate) fn to_propagation(&self) -> Result<backstop_deadline::Propagation, ConfigError> {
        let name = http::HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| {
            ConfigError::new(
                "propagation.header",
                format!("must be a valid header name, got {:?}", self.header),
            )
        })?;
        let propagation = backstop_deadline::Propagation::new().grpc(self.grpc);
        if !self.http {
            return Ok(propagation.no_header());
        }
        let propagation = propagation.header(name);
        if self.only_to.is_empty() {
            Ok(propagation)
        } else {
            propagation.only_to(&self.only_to)
        }
    }
}
