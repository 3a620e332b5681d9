//! A `tracing_subscriber::Layer` that records every span (name, parent's name, fields, later
//! records included) and every event (message, level, target, the span it happened in, fields),
//! for tests that assert on what the layers report. Install it for one test with
//! [`Capture::install`], on a current-thread runtime, so tests never share a subscriber.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A recorded field value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    U64(u64),
    I64(i64),
    Bool(bool),
    F64(f64),
    /// Recorded with `?` or `%` (`Debug` / `Display`), as text.
    Text(String),
}

impl Value {
    /// The value as text, whichever way it was recorded.
    pub fn text(&self) -> String {
        match self {
            Value::Str(s) | Value::Text(s) => s.clone(),
            Value::U64(n) => n.to_string(),
            Value::I64(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::F64(f) => f.to_string(),
        }
    }
}

pub type Fields = BTreeMap<String, Value>;

#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub name: &'static str,
    pub target: String,
    pub parent: Option<&'static str>,
    pub fields: Fields,
}

impl SpanRecord {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }
}

#[derive(Clone, Debug)]
pub struct EventRecord {
    pub message: String,
    pub level: Level,
    pub target: String,
    /// The name of the span the event happened in.
    pub parent: Option<&'static str>,
    pub fields: Fields,
}

impl EventRecord {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }
}

#[derive(Clone, Default)]
pub struct Capture {
    spans: Arc<Mutex<Vec<SpanRecord>>>,
    events: Arc<Mutex<Vec<EventRecord>>>,
}

/// Where a span's record sits in [`Capture::spans`], kept in the span's extensions.
struct Index(usize);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::Str(value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::U64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::I64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::F64(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::Text(format!("{value:?}")));
    }
}

impl Capture {
    /// A capture installed as the current thread's default subscriber until the guard drops.
    pub fn install() -> (Capture, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
    }

    pub fn spans(&self) -> Vec<SpanRecord> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans named `name`, in the order they were opened.
    pub fn spans_named(&self, name: &str) -> Vec<SpanRecord> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    pub fn events(&self) -> Vec<EventRecord> {
        self.events.lock().unwrap().clone()
    }

    /// The events whose message is `message`, in order.
    pub fn events_with(&self, message: &str) -> Vec<EventRecord> {
        self.events()
            .into_iter()
            .filter(|e| e.message == message)
            .collect()
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push(SpanRecord {
            name: span.name(),
            target: span.metadata().target().to_owned(),
            parent: span.parent().map(|p| p.name()),
            fields,
        });
        span.extensions_mut().insert(Index(spans.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(index) = span.extensions().get::<Index>().map(|i| i.0) else {
            return;
        };
        let mut spans = self.spans.lock().unwrap();
        values.record(&mut Visitor(&mut spans[index].fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        let message = fields
            .remove("message")
            .map(|m| m.text())
            .unwrap_or_default();
        self.events.lock().unwrap().push(EventRecord {
            message,
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            parent: ctx.event_span(event).map(|s| s.name()),
            fields,
        });
    }
}
