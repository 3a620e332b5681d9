//! The spans and events of issue 19, through a capture layer: the span tree of a retried call
//! made by the default `Client` (one `http.client.call`, three `http.client.attempt` children,
//! the retry events inside the call), and the server stack's `http.server.request` with axum's
//! route. Names and fields: the README's "Observability" section.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use backstop::{Client, ServerStack};
use backstop_chaos::{ChaosServer, Fault, Script};
use common::{bounded, serve_axum};
use http::StatusCode;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as the capture saw it: its name, its parent (an index into the captured spans) and
/// its fields, every value written as text.
#[derive(Debug, Clone)]
struct SpanRecord {
    name: &'static str,
    parent: Option<usize>,
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct EventRecord {
    target: String,
    level: tracing::Level,
    /// The spans the event happened in, innermost first.
    scope: Vec<usize>,
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Captured {
    spans: Vec<SpanRecord>,
    events: Vec<EventRecord>,
}

/// Records every span (with its parent) and every event (with the spans around it). Spans are
/// numbered by the capture itself: the registry reuses the ids of closed spans.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

/// The capture's number of a span, in the span's extensions.
struct Index(usize);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a new span is in the registry");
        let parent = span
            .parent()
            .and_then(|parent| parent.extensions().get::<Index>().map(|i| i.0));
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut captured = self.0.lock().unwrap();
        let index = captured.spans.len();
        captured.spans.push(SpanRecord {
            name: attrs.metadata().name(),
            parent,
            fields,
        });
        span.extensions_mut().insert(Index(index));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(index) = span.extensions().get::<Index>().map(|i| i.0) else {
            return;
        };
        let mut captured = self.0.lock().unwrap();
        values.record(&mut Fields(&mut captured.spans[index].fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .filter_map(|span| span.extensions().get::<Index>().map(|i| i.0))
                    .collect()
            })
            .unwrap_or_default();
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().events.push(EventRecord {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            scope,
            fields,
        });
    }
}

impl Capture {
    fn snapshot(&self) -> (Vec<SpanRecord>, Vec<EventRecord>) {
        let captured = self.0.lock().unwrap();
        (captured.spans.clone(), captured.events.clone())
    }
}

fn field<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).map(String::as_str)
}

/// The default client's retried call: 503, 503, then 200, to a URL whose query carries a value.
#[tokio::test]
async fn a_retried_call_is_one_call_span_with_three_attempt_spans_and_two_retry_events() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let chaos = ChaosServer::start().await.unwrap();
    chaos.script("/flaky", Script::fail_times(2, Fault::status(503)));
    let client = Client::new().unwrap();
    let res = bounded(client.get(&chaos.url("/flaky?token=secret&page=2")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);

    let (spans, events) = capture.snapshot();
    let calls: Vec<usize> = (0..spans.len())
        .filter(|&i| spans[i].name == "http.client.call")
        .collect();
    assert_eq!(calls.len(), 1, "one call span: {spans:#?}");
    let call = calls[0];
    let fields = &spans[call].fields;
    let port = chaos.addr().port().to_string();
    let expected = [
        ("otel.name", "GET"),
        ("otel.kind", "client"),
        ("http.request.method", "GET"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("url.scheme", "http"),
        ("http.response.status_code", "200"),
        ("backstop.attempts", "3"),
    ];
    for (name, value) in expected {
        assert_eq!(field(fields, name), Some(value), "{name} in {fields:?}");
    }
    let full = format!("http://127.0.0.1:{port}/flaky?token=REDACTED&page=REDACTED");
    assert_eq!(field(fields, "url.full"), Some(full.as_str()));
    assert_eq!(field(fields, "error.type"), None, "the call succeeded");
    assert_eq!(spans[call].parent, None);

    let attempts: Vec<&SpanRecord> = spans
        .iter()
        .filter(|s| s.name == "http.client.attempt")
        .collect();
    assert_eq!(attempts.len(), 3, "{spans:#?}");
    let resends: Vec<Option<&str>> = attempts
        .iter()
        .map(|a| field(&a.fields, "http.request.resend_count"))
        .collect();
    assert_eq!(resends, [None, Some("1"), Some("2")]);
    let statuses: Vec<Option<&str>> = attempts
        .iter()
        .map(|a| field(&a.fields, "http.response.status_code"))
        .collect();
    assert_eq!(statuses, [Some("503"), Some("503"), Some("200")]);
    for attempt in &attempts {
        assert_eq!(attempt.parent, Some(call), "an attempt is the call's child");
        assert_eq!(field(&attempt.fields, "url.full"), Some(full.as_str()));
        assert_eq!(field(&attempt.fields, "otel.kind"), Some("client"));
    }

    let retries: Vec<&EventRecord> = events
        .iter()
        .filter(|e| field(&e.fields, "message") == Some("retry scheduled"))
        .collect();
    assert_eq!(retries.len(), 2, "{events:#?}");
    for (n, event) in retries.iter().enumerate() {
        assert!(event.scope.contains(&call), "inside the call: {event:?}");
        assert_eq!(event.target, "backstop_retry");
        assert_eq!(event.level, tracing::Level::INFO);
        assert_eq!(field(&event.fields, "reason"), Some("http_status"));
        let resend = (n + 1).to_string();
        assert_eq!(field(&event.fields, "resend_count"), Some(resend.as_str()));
        assert!(field(&event.fields, "delay_ms").is_some(), "{event:?}");
    }
}

/// A failed call records its kind as `error.type` and the attempts it made.
#[tokio::test]
async fn a_refused_call_records_its_error_type() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let closed = backstop_chaos::closed_port_addr().unwrap();
    let client = Client::builder().max_attempts(1).build().unwrap();
    let err = bounded(client.get(&format!("http://{closed}/x")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), backstop::Kind::Refused);
    let (spans, _) = capture.snapshot();
    let call = spans
        .iter()
        .find(|s| s.name == "http.client.call")
        .expect("a call span");
    assert_eq!(field(&call.fields, "error.type"), Some("refused"));
    assert_eq!(field(&call.fields, "backstop.attempts"), Some("1"));
    assert_eq!(field(&call.fields, "http.response.status_code"), None);
}

/// The server span carries axum's route pattern, never the path, and a client call made inside
/// the handler is its child.
#[tokio::test]
async fn the_server_span_names_the_route_and_parents_the_handlers_calls() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let chaos = ChaosServer::start().await.unwrap();
    let upstream = chaos.url("/");
    let app = Router::new()
        .route(
            "/users/{id}",
            get(move || {
                let upstream = upstream.clone();
                async move {
                    let client = Client::builder().max_attempts(1).build().unwrap();
                    let res = client.get(&upstream).await.unwrap();
                    res.status().as_u16().to_string()
                }
            }),
        )
        .layer(ServerStack::builder().build().unwrap());
    let addr = serve_axum(app).await;
    let client = Client::builder().max_attempts(1).build().unwrap();
    let res = bounded(client.get(&format!("http://{addr}/users/42")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let unrouted = bounded(client.get(&format!("http://{addr}/nowhere")))
        .await
        .unwrap();
    assert_eq!(unrouted.status(), StatusCode::NOT_FOUND);

    let (spans, _) = capture.snapshot();
    let servers: Vec<usize> = (0..spans.len())
        .filter(|&i| spans[i].name == "http.server.request")
        .collect();
    assert_eq!(servers.len(), 2, "{spans:#?}");
    let routed = &spans[servers[0]].fields;
    let expected = [
        ("otel.name", "GET /users/{id}"),
        ("otel.kind", "server"),
        ("http.request.method", "GET"),
        ("http.route", "/users/{id}"),
        ("http.response.status_code", "200"),
    ];
    for (name, value) in expected {
        assert_eq!(field(routed, name), Some(value), "{name} in {routed:?}");
    }
    let fallback = &spans[servers[1]].fields;
    assert_eq!(field(fallback, "http.route"), None, "no route matched");
    assert_eq!(field(fallback, "otel.name"), Some("GET"));
    assert_eq!(field(fallback, "http.response.status_code"), Some("404"));
    // The handler's call: a client call span under the server span.
    let inner_calls: Vec<&SpanRecord> = spans
        .iter()
        .filter(|s| s.name == "http.client.call" && s.parent == Some(servers[0]))
        .collect();
    assert_eq!(inner_calls.len(), 1, "{spans:#?}");
}
