//! The probe's per-address connect diagnosis: after the client's connect failed, each resolved
//! address is tried on its own so the report can say which answered how. Separate because it is
//! the probe's own network activity, not the client's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use backstop::{Error, Phase};

use super::report::{AddrAttempt, ms};

/// Tries each address on its own, so a report can say which answered how.
pub(crate) async fn connect_each(addrs: &[SocketAddr], bound: Duration) -> Vec<AddrAttempt> {
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let started = Instant::now();
        let result = match tokio::time::timeout(bound, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => "connected".to_owned(),
            Ok(Err(e)) => {
                let kind = Error::from_io(e, Phase::Connect).kind();
                format!("{} ({})", kind.name(), kind.explanation())
            }
            Err(_) => format!("no answer within {}", crate::fmt_duration(bound)),
        };
        out.push(AddrAttempt {
            address: addr.to_string(),
            ms: ms(started.elapsed()),
            result,
        });
    }
    out
}
