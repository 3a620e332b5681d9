//! [`StatusSnapshot::to_json`]: the snapshot as JSON, written by hand (no serde needed).

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::snapshot::{BreakerStatus, BudgetStatus, ClientStatus, ServerStatus, StatusSnapshot};

impl StatusSnapshot {
    /// The snapshot as one JSON object:
    ///
    /// ```text
    /// {"taken_at_unix_ms": 1764650000000,
    ///  "clients": [{"name": "payments", "breakers_enabled": true,
    ///               "budget": {"available": 10, "ratio": 0.2, "min_per_second": 10, "window_ms": 10000},
    ///               "breakers": [{"host": "http://10.0.0.7:8080", "state": "open", "metrics_only": false,
    ///                             "calls": 0, "failures": 0, "failure_rate": null,
    ///                             "consecutive_failures": 5, "trips": 1,
    ///                             "next_probe_in_ms": 4200, "open_until_unix_ms": 1764650004200,
    ///                             "probes_in_flight": 0}]}],
    ///  "gateways": [{"name": "edge", "buffer_budget": 268435456, "buffer_reserved": 0,
    ///                "routes": [{"prefix": "/payments", "methods": ["POST"],
    ///                            "upstream": "http://10.0.0.7:8080/api",
    ///                            "breakers_enabled": true, "budget": {…}, "breakers": […]}]}],
    ///  "servers": [{"name": "public", "in_flight": 3, "max_in_flight": 1024, "shed": 0,
    ///               "success": 120, "client_errors": 2, "server_errors": 0, "timed_out": 1}]}
    /// ```
    ///
    /// `state` is the breaker state's name (`closed`, `open`, `half-open`, `forced open`,
    /// `forced closed`); a value that does not apply (`failure_rate` with no call in the
    /// window, `next_probe_in_ms` unless open, `budget` when off) is `null`. `gateways` is
    /// there with the `gateway` feature.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("{\"taken_at_unix_ms\":");
        push_opt_u128(&mut out, unix_ms(self.taken_at));
        out.push_str(",\"clients\":[");
        for (i, client) in self.clients.iter().enumerate() {
            comma(&mut out, i);
            out.push_str("{\"name\":");
            push_str(&mut out, &client.name);
            out.push(',');
            client_fields(&mut out, client);
            out.push('}');
        }
        out.push(']');
        #[cfg(feature = "gateway")]
        {
            out.push_str(",\"gateways\":[");
            for (i, gateway) in self.gateways.iter().enumerate() {
                comma(&mut out, i);
                out.push_str("{\"name\":");
                push_str(&mut out, &gateway.name);
                let _ = write!(
                    out,
                    ",\"buffer_budget\":{},\"buffer_reserved\":{},\"routes\":[",
                    gateway.buffer_budget, gateway.buffer_reserved
                );
                for (j, route) in gateway.routes.iter().enumerate() {
                    comma(&mut out, j);
                    out.push_str("{\"prefix\":");
                    push_str(&mut out, &route.prefix);
                    out.push_str(",\"methods\":[");
                    for (k, method) in route.methods.iter().enumerate() {
                        comma(&mut out, k);
                        push_str(&mut out, method);
                    }
                    out.push_str("],\"upstream\":");
                    push_str(&mut out, &route.upstream);
                    out.push(',');
                    client_fields(&mut out, &route.client);
                    out.push('}');
                }
                out.push_str("]}");
            }
            out.push(']');
        }
        out.push_str(",\"servers\":[");
        for (i, server) in self.servers.iter().enumerate() {
            comma(&mut out, i);
            server_json(&mut out, server);
        }
        out.push_str("]}");
        out
    }
}

fn client_fields(out: &mut String, client: &ClientStatus) {
    let _ = write!(
        out,
        "\"breakers_enabled\":{},\"budget\":",
        client.breakers_enabled
    );
    match &client.budget {
        Some(budget) => budget_json(out, budget),
        None => out.push_str("null"),
    }
    out.push_str(",\"breakers\":[");
    for (i, breaker) in client.breakers.iter().enumerate() {
        comma(out, i);
        breaker_json(out, breaker);
    }
    out.push(']');
}

fn budget_json(out: &mut String, budget: &BudgetStatus) {
    let _ = write!(out, "{{\"available\":{},\"ratio\":", budget.available);
    push_f64(out, Some(budget.ratio));
    let _ = write!(
        out,
        ",\"min_per_second\":{},\"window_ms\":{}}}",
        budget.min_per_second,
        budget.window.as_millis()
    );
}

fn breaker_json(out: &mut String, breaker: &BreakerStatus) {
    let s = &breaker.snapshot;
    out.push_str("{\"host\":");
    push_str(out, &breaker.host);
    out.push_str(",\"state\":");
    push_str(out, s.state.name());
    let _ = write!(
        out,
        ",\"metrics_only\":{},\"calls\":{},\"failures\":{},\"failure_rate\":",
        s.metrics_only, s.calls, s.failures
    );
    push_f64(out, s.failure_rate);
    let _ = write!(
        out,
        ",\"consecutive_failures\":{},\"trips\":{},\"next_probe_in_ms\":",
        s.consecutive_failures, s.trips
    );
    push_opt_u128(out, s.next_probe_in.as_ref().map(Duration::as_millis));
    out.push_str(",\"open_until_unix_ms\":");
    push_opt_u128(out, breaker.open_until.and_then(unix_ms));
    let _ = write!(out, ",\"probes_in_flight\":{}}}", s.probes_in_flight);
}

fn server_json(out: &mut String, server: &ServerStatus) {
    out.push_str("{\"name\":");
    push_str(out, &server.name);
    let _ = write!(
        out,
        ",\"in_flight\":{},\"max_in_flight\":{},\"shed\":{},\"success\":{},\
         \"client_errors\":{},\"server_errors\":{},\"timed_out\":{}}}",
        server.in_flight,
        server.max_in_flight,
        server.shed,
        server.success,
        server.client_errors,
        server.server_errors,
        server.timed_out
    );
}

pub(super) fn unix_ms(at: SystemTime) -> Option<u128> {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis())
}

fn comma(out: &mut String, index: usize) {
    if index > 0 {
        out.push(',');
    }
}

fn push_opt_u128(out: &mut String, value: Option<u128>) {
    match value {
        Some(value) => {
            let _ = write!(out, "{value}");
        }
        None => out.push_str("null"),
    }
}

/// A finite number as JSON (Rust's shortest round-trip form is valid JSON); anything else
/// `null`.
fn push_f64(out: &mut String, value: Option<f64>) {
    match value {
        Some(value) if value.is_finite() => {
            let _ = write!(out, "{value}");
        }
        _ => out.push_str("null"),
    }
}

/// `value` as a JSON string: quotes, backslashes and control characters escaped (RFC 8259
/// §7), and `<`, `>`, `&` too so that the JSON stays inert if some page embeds it.
pub(super) fn push_str(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(value: &str) -> String {
        let mut out = String::new();
        push_str(&mut out, value);
        out
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(json("plain"), "\"plain\"");
        assert_eq!(json("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(json("l1\nl2\t\r"), "\"l1\\nl2\\t\\r\"");
        assert_eq!(json("\u{1}"), "\"\\u0001\"");
        assert_eq!(json("</script>&"), "\"\\u003c/script\\u003e\\u0026\"");
        assert_eq!(json("é✓"), "\"é✓\"");
    }

    #[test]
    fn numbers_that_json_cannot_hold_are_null() {
        let mut out = String::new();
        push_f64(&mut out, Some(f64::NAN));
        out.push(' ');
        push_f64(&mut out, Some(0.25));
        out.push(' ');
        push_f64(&mut out, Some(1.0));
        out.push(' ');
        push_f64(&mut out, None);
        assert_eq!(out, "null 0.25 1 null");
    }
}
