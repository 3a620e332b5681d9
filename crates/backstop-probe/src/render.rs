//! The report for a person: an aligned table, one row per phase with a waterfall bar (like
//! curl -w's cumulative times, drawn), then the failure in plain words.

use std::fmt::Write;
use std::io::IsTerminal;

use crate::probe::Report;

/// Colour only on a terminal, and never when `NO_COLOR` is set (no-color.org).
pub(crate) fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn ok(&self, t: &str) -> String {
        self.wrap("32", t)
    }
    fn bad(&self, t: &str) -> String {
        self.wrap("1;31", t)
    }
    fn dim(&self, t: &str) -> String {
        self.wrap("2", t)
    }
}

const BAR: usize = 30;

/// A table row: the phase, its (start, duration) in ms when it ran, and the detail.
type Row = (String, Option<(f64, f64)>, String);

/// A bar of `BAR` cells: blank until `start`, filled for `len`, of a waterfall spanning `total`.
fn bar(start: f64, len: f64, total: f64) -> String {
    if total <= 0.0 {
        return " ".repeat(BAR);
    }
    let cell = |t: f64| ((t / total) * BAR as f64).round() as usize;
    // A phase that starts at the very end still gets its cell.
    let from = cell(start).min(BAR - 1);
    let to = cell(start + len).clamp(from, BAR);
    let fill = (to - from).max(usize::from(len > 0.0 && from < BAR));
    let to = (from + fill).min(BAR);
    format!(
        "{}{}{}",
        " ".repeat(from),
        "█".repeat(to - from),
        " ".repeat(BAR - to)
    )
}

fn dur(v: f64) -> String {
    crate::fmt_duration(std::time::Duration::from_secs_f64(v.max(0.0) / 1000.0))
}

/// Renders `r` as text.
pub(crate) fn report(r: &Report, color: bool) -> String {
    let p = Paint(color);
    let mut out = String::new();
    let _ = writeln!(out, "{} {}", r.method, r.url);
    let mut rows: Vec<Row> = Vec::new();
    let total = r.total_ms;
    let failed_layer = r.failure.as_ref().map(|f| f.layer.as_str());

    let mut at = 0.0;
    let resolve_detail = match r.resolve.source {
        "ip-literal" => format!("{} (IP address, nothing to resolve)", r.resolve.host),
        source => format!(
            "{} → {} ({source})",
            r.resolve.host,
            if r.resolve.addresses.is_empty() {
                "no address".to_owned()
            } else {
                r.resolve.addresses.join(", ")
            }
        ),
    };
    let resolve_ms = r.resolve.ms.unwrap_or(0.0);
    rows.push((
        "resolve".into(),
        r.resolve.ms.map(|m| (0.0, m)),
        resolve_detail,
    ));
    at += resolve_ms;

    let connect_detail = match (r.connect.ms, r.resolve.addresses.as_slice()) {
        (Some(_), [one]) => format!("connected to {one}"),
        (Some(_), _) => "connected".to_owned(),
        (None, _) => String::new(),
    };
    rows.push((
        "tcp connect".into(),
        r.connect.ms.map(|m| (at, m)),
        connect_detail,
    ));
    at += r.connect.ms.unwrap_or(0.0);

    if let Some(tls) = &r.tls {
        let detail = match &tls.details {
            Some(d) => format!(
                "{} {} alpn={}",
                d.version.as_deref().unwrap_or("?"),
                d.cipher.as_deref().unwrap_or("?"),
                d.alpn.as_deref().unwrap_or("none")
            ),
            None => String::new(),
        };
        rows.push(("tls".into(), tls.ms.map(|m| (at, m)), detail));
        at += tls.ms.unwrap_or(0.0);
    }
    if let Some(h) = &r.http {
        let head = format!("{} {} {}", h.version, h.status, h.reason);
        let head = if h.status >= 400 {
            p.bad(&head)
        } else {
            p.ok(&head)
        };
        rows.push((
            "first byte".into(),
            Some((at, (h.ttfb_ms - at).max(0.0))),
            format!("{head} (TTFB {})", dur(h.ttfb_ms)),
        ));
        rows.push((
            "body".into(),
            Some((h.ttfb_ms, h.body_ms)),
            format!("{} bytes", h.body_bytes),
        ));
    }
    for (name, span, detail) in rows {
        let failed =
            failed_layer.is_some_and(|l| l.starts_with(name.split(' ').next().unwrap_or("")));
        let (time, drawn) = match span {
            Some((start, len)) => (dur(len), bar(start, len, total)),
            None if failed => ("FAILED".to_owned(), " ".repeat(BAR)),
            None => ("-".to_owned(), " ".repeat(BAR)),
        };
        let name_col = format!("{name:<12}");
        let name_col = if failed { p.bad(&name_col) } else { name_col };
        let _ = writeln!(out, "  {name_col} {time:>9} |{}| {detail}", p.dim(&drawn));
    }
    let _ = writeln!(out, "  {:<12} {:>9}", "total", dur(total));

    for a in &r.connect.attempts {
        let _ = writeln!(
            out,
            "    tried {:<24} {:>9}  {}",
            a.address,
            dur(a.ms),
            a.result
        );
    }
    if let Some(tls) = &r.tls {
        if let Some(d) = &tls.details {
            if let Some(c) = &d.certificate {
                let _ = writeln!(out, "  certificate");
                let _ = writeln!(out, "    subject    {}", c.subject);
                let _ = writeln!(out, "    issuer     {}", c.issuer);
                let _ = writeln!(
                    out,
                    "    valid      {} → {} ({} days left)",
                    c.not_before, c.not_after, c.days_left
                );
                let matched = if c.name_match {
                    p.ok("matches")
                } else {
                    p.bad("does NOT match")
                };
                let _ = writeln!(
                    out,
                    "    names      {} ({matched} {})",
                    c.names.join(", "),
                    r.resolve.host
                );
            }
            match (d.trusted, &d.verification_error) {
                (Some(true), _) => {
                    let _ = writeln!(out, "    trusted    {}", p.ok("yes"));
                }
                (_, Some(e)) => {
                    let _ = writeln!(out, "    trusted    {} ({e})", p.bad("no"));
                }
                _ => {}
            }
        }
        if let Some(e) = &tls.inspect_error {
            let _ = writeln!(out, "  tls details unavailable: {e}");
        }
    }
    if let Some(h) = &r.http {
        let hs = &h.headers;
        for (name, value) in [
            ("server", &hs.server),
            ("content-type", &hs.content_type),
            ("content-length", &hs.content_length),
            ("retry-after", &hs.retry_after),
        ] {
            if let Some(v) = value {
                let _ = writeln!(out, "  {name:<15} {v}");
            }
        }
    }
    if r.retries.attempts > 1 || r.retries.stopped.is_some() {
        let delays: Vec<String> = r.retries.delays_ms.iter().map(|d| dur(*d)).collect();
        let _ = writeln!(
            out,
            "  retries      {} attempt(s), delays [{}]{}",
            r.retries.attempts,
            delays.join(", "),
            r.retries
                .stopped
                .as_ref()
                .map(|s| format!(", stopped: {s}"))
                .unwrap_or_default()
        );
    }
    if let Some(s) = &r.stats {
        let _ = writeln!(out, "\n  {} runs, {} failed", s.runs, s.failures);
        let _ = writeln!(
            out,
            "  {:<12} {:>9} {:>9} {:>9}",
            "phase", "min", "median", "p99"
        );
        for ph in &s.phases {
            let _ = writeln!(
                out,
                "  {:<12} {:>9} {:>9} {:>9}",
                ph.phase,
                dur(ph.min_ms),
                dur(ph.median_ms),
                dur(ph.p99_ms)
            );
        }
    }
    if let Some(f) = &r.failure {
        let _ = writeln!(out);
        let _ = writeln!(out, "{} at {}: {}", p.bad("FAILED"), f.layer, f.kind);
        let _ = writeln!(out, "  {}", f.summary);
        let _ = writeln!(out, "  why:   {}", f.explanation);
        let _ = writeln!(out, "  next:  {}", f.next_step);
        let _ = writeln!(out, "  run:   {}", f.next_command);
        let _ = writeln!(out, "  error: {}", p.dim(&f.error));
        let _ = writeln!(out, "  exit code {}", f.exit_code);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn bars_fill_their_share_and_never_vanish() {
        assert_eq!(
            bar(0.0, 50.0, 100.0).chars().filter(|c| *c == '█').count(),
            15
        );
        assert_eq!(
            bar(99.0, 0.1, 100.0).chars().filter(|c| *c == '█').count(),
            1
        );
        assert_eq!(bar(0.0, 10.0, 100.0).chars().count(), 30);
    }
}
