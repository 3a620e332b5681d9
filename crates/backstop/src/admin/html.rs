//! [`StatusSnapshot::to_html`]: the status page, rendered on the server from the one embedded
//! template `status.html` (its styles and the 2 s refresh); no JavaScript.

use std::fmt::Write;
use std::time::Duration;

use backstop_breaker::State;

use super::snapshot::{BreakerStatus, ClientStatus, ServerStatus, StatusSnapshot};

/// The page: everything but the content, which goes where `{{content}}` is.
const TEMPLATE: &str = include_str!("status.html");

impl StatusSnapshot {
    /// The status page: a summary of breaker states, a table of server stacks (in flight,
    /// shed), then a table per client and per gateway route with a row per upstream host (its
    /// breaker's state as a coloured badge, the time left before a probe, failure rate, calls
    /// in the window) under its retry budget's balance. It refreshes itself every 2 s. Every
    /// value is HTML-escaped.
    pub fn to_html(&self) -> String {
        let mut content = String::with_capacity(4096);
        self.summary(&mut content);
        if !self.servers.is_empty() {
            content.push_str("<h2>Servers</h2>\n");
            servers(&mut content, &self.servers);
        }
        if !self.clients.is_empty() {
            content.push_str("<h2>Clients</h2>\n<div class=\"grid\">\n");
            for client in &self.clients {
                content.push_str("<section class=\"card\">\n<h3>");
                escape(&mut content, &client.name);
                content.push_str("</h3>\n");
                client_body(&mut content, client);
                content.push_str("</section>\n");
            }
            content.push_str("</div>\n");
        }
        #[cfg(feature = "gateway")]
        for gateway in &self.gateways {
            content.push_str("<h2>Gateway ");
            escape(&mut content, &gateway.name);
            content.push_str("</h2>\n<div class=\"grid\">\n");
            for route in &gateway.routes {
                content.push_str("<section class=\"card\">\n<h3>");
                escape(&mut content, &route.prefix);
                content.push_str(" <span class=\"upstream\">&rarr; ");
                escape(&mut content, &route.upstream);
                if !route.methods.is_empty() {
                    content.push_str(" (");
                    escape(&mut content, &route.methods.join(", "));
                    content.push(')');
                }
                content.push_str("</span></h3>\n");
                client_body(&mut content, &route.client);
                content.push_str("</section>\n");
            }
            content.push_str("</div>\n");
            let _ = writeln!(
                content,
                "<p class=\"summary\">Replay buffer: {} of {} reserved.</p>",
                bytes(gateway.buffer_reserved),
                bytes(gateway.buffer_budget)
            );
        }

        let (head, tail) = TEMPLATE.split_once("{{content}}").unwrap_or((TEMPLATE, ""));
        let mut taken = String::new();
        escape(&mut taken, &httpdate::fmt_http_date(self.taken_at));
        let head = head.replace("{{taken_at}}", &taken);
        let mut page = String::with_capacity(head.len() + content.len() + tail.len());
        page.push_str(&head);
        page.push_str(&content);
        page.push_str(tail);
        page
    }

    fn summary(&self, out: &mut String) {
        let (mut total, mut open, mut half_open) = (0, 0, 0);
        for (_, breaker) in self.all_breakers() {
            total += 1;
            match breaker.snapshot.state {
                State::Open | State::ForcedOpen => open += 1,
                State::HalfOpen => half_open += 1,
                State::Closed | State::ForcedClosed => {}
            }
        }
        let class = if open > 0 { " hot" } else { "" };
        let _ = writeln!(
            out,
            "<p class=\"summary{class}\">{open} open, {half_open} half-open of {total} \
             breaker{}.</p>",
            if total == 1 { "" } else { "s" }
        );
    }
}

fn servers(out: &mut String, servers: &[ServerStatus]) {
    out.push_str(
        "<section class=\"card\"><table>\n<tr><th>server</th><th class=\"num\">in flight</th>\
         <th class=\"num\">max in flight</th><th class=\"num\">shed</th><th class=\"num\">success</th>\
         <th class=\"num\">4xx</th><th class=\"num\">5xx</th><th class=\"num\">timed out</th></tr>\n",
    );
    for s in servers {
        out.push_str("<tr><td>");
        escape(out, &s.name);
        let shed_class = if s.shed > 0 { " hot" } else { "" };
        let _ = writeln!(
            out,
            "</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num{shed_class}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            s.in_flight,
            s.max_in_flight,
            s.shed,
            s.success,
            s.client_errors,
            s.server_errors,
            s.timed_out
        );
    }
    out.push_str("</table></section>\n");
}

fn client_body(out: &mut String, client: &ClientStatus) {
    out.push_str("<p>");
    match &client.budget {
        Some(b) => {
            let _ = write!(
                out,
                "retry budget: <b>{} retr{} available</b> ({} % of requests + {}/s, over {})",
                b.available,
                if b.available == 1 { "y" } else { "ies" },
                percent(b.ratio),
                b.min_per_second,
                duration(b.window)
            );
        }
        None => out.push_str("retry budget: off"),
    }
    out.push_str("</p>\n");
    if !client.breakers_enabled {
        out.push_str("<p>breakers: off</p>\n");
        return;
    }
    out.push_str(
        "<table>\n<tr><th>upstream host</th><th>state</th><th class=\"num\">time left</th>\
         <th class=\"num\">failure rate</th><th class=\"num\">window</th>\
         <th class=\"num\">in a row</th><th class=\"num\">trips</th></tr>\n",
    );
    if client.breakers.is_empty() {
        out.push_str("<tr><td class=\"none\" colspan=\"7\">no upstream called yet</td></tr>\n");
    }
    for breaker in &client.breakers {
        breaker_row(out, breaker);
    }
    out.push_str("</table>\n");
}

fn breaker_row(out: &mut String, breaker: &BreakerStatus) {
    let s = &breaker.snapshot;
    out.push_str("<tr><td class=\"host\">");
    escape(out, &breaker.host);
    let name = s.state.name();
    out.push_str("</td><td><span class=\"badge state-");
    escape(out, &name.replace(' ', "-"));
    out.push_str("\">");
    escape(out, name);
    if s.metrics_only {
        out.push_str(" (watch only)");
    }
    out.push_str("</span></td><td class=\"num\">");
    match s.next_probe_in {
        Some(left) => out.push_str(&duration(left)),
        None => out.push_str("&mdash;"),
    }
    out.push_str("</td><td class=\"num\">");
    match s.failure_rate {
        Some(rate) => {
            let _ = write!(out, "{} %", percent(rate));
        }
        None => out.push_str("&mdash;"),
    }
    let _ = writeln!(
        out,
        "</td><td class=\"num\">{}/{} failed</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td></tr>",
        s.failures, s.calls, s.consecutive_failures, s.trips
    );
}

/// `ratio` (0 ..= 1) as a percentage, without a needless decimal.
fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if (p - p.round()).abs() < 0.05 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

/// `850 ms`, `4.2 s`, `69 s`, `12 min 5 s`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 10_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else if ms < 600_000 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// `256 MiB`, `12 KiB`, `10 B`.
#[cfg(feature = "gateway")]
fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    if n >= KIB * KIB && n.is_multiple_of(KIB * KIB) {
        format!("{} MiB", n / (KIB * KIB))
    } else if n >= KIB {
        format!("{:.0} KiB", n as f64 / KIB as f64)
    } else {
        format!("{n} B")
    }
}

/// Appends `value` with `&`, `<`, `>`, `"` and `'` escaped: safe in text and in quoted
/// attributes.
pub(super) fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        let mut out = String::new();
        escape(&mut out, "<script>alert('x') & \"y\"</script>");
        assert_eq!(
            out,
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn the_template_has_its_two_slots_and_refreshes_itself() {
        assert_eq!(TEMPLATE.matches("{{content}}").count(), 1);
        assert_eq!(TEMPLATE.matches("{{taken_at}}").count(), 1);
        assert!(TEMPLATE.contains(r#"<meta http-equiv="refresh" content="2">"#));
        assert!(!TEMPLATE.contains("<script"));
    }

    #[test]
    fn figures_are_readable() {
        assert_eq!(percent(0.2), "20");
        assert_eq!(percent(0.125), "12.5");
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_millis(4_210)), "4.2 s");
        assert_eq!(duration(Duration::from_millis(69_900)), "69 s");
        assert_eq!(duration(Duration::from_secs(725)), "12 min 5 s");
    }

    #[cfg(feature = "gateway")]
    #[test]
    fn sizes_are_readable() {
        assert_eq!(bytes(256 * 1024 * 1024), "256 MiB");
        assert_eq!(bytes(12 * 1024 + 7), "12 KiB");
        assert_eq!(bytes(10), "10 B");
    }
}
