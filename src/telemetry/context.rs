//! Trace context across boundaries: into a job's row and out of it, and onto outbound HTTP
//! requests as W3C `traceparent`, so one trace runs from the webhook to the won deal.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// At most this many extra causes are linked from one job: a storm of duplicate webhooks must
/// not grow a row without bound.
const MAX_LINKS: usize = 8;

/// What a job row keeps of its causes: the first one's W3C context (the job's parent) and the
/// `traceparent` of each later duplicate (span links).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    links: Vec<String>,
}

fn fields_of_current() -> HashMap<String, String> {
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut fields);
    fields
}

/// The current span's context, serialised for storing with a job. `None` when nothing is
/// being traced.
pub fn current() -> Option<String> {
    let mut fields = fields_of_current();
    let traceparent = fields.remove("traceparent")?;
    let stored =
        Stored { traceparent: Some(traceparent), tracestate: fields.remove("tracestate"), links: Vec::new() };
    serde_json::to_string(&stored).ok()
}

/// A job that already existed got another cause (a duplicate webhook): the current span is
/// added to its links. `None` when there is nothing to change.
pub fn with_link(stored: Option<&str>) -> Option<String> {
    let link = fields_of_current().remove("traceparent")?;
    let mut stored: Stored = stored.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
    if stored.links.len() >= MAX_LINKS || stored.traceparent.as_deref() == Some(link.as_str()) {
        return None;
    }
    stored.links.push(link);
    serde_json::to_string(&stored).ok()
}

/// Links the current span to the trace a job's stored context names (its first cause).
pub fn link_current(stored: Option<&str>) {
    let Some(stored) = stored.and_then(|s| serde_json::from_str::<Stored>(s).ok()) else {
        return;
    };
    if let Some(parent) = &stored.traceparent {
        let fields = HashMap::from([("traceparent".to_owned(), parent.clone())]);
        let cx = TraceContextPropagator::new().extract(&fields);
        tracing::Span::current().add_link(cx.span().span_context().clone());
    }
}

/// Makes `span` a child of the job's first cause and links it to the others, so a job's work
/// joins the trace of the webhook that caused it.
pub fn adopt(span: &tracing::Span, stored: Option<&str>) {
    let Some(stored) = stored.and_then(|s| serde_json::from_str::<Stored>(s).ok()) else {
        return;
    };
    let propagator = TraceContextPropagator::new();
    let context_of = |traceparent: &str, tracestate: Option<&str>| {
        let mut fields = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        if let Some(state) = tracestate {
            fields.insert("tracestate".to_owned(), state.to_owned());
        }
        propagator.extract(&fields)
    };
    if let Some(parent) = &stored.traceparent {
        let _ = span.set_parent(context_of(parent, stored.tracestate.as_deref()));
    }
    for link in &stored.links {
        span.add_link(context_of(link, None).span().span_context().clone());
    }
}

/// Adds `traceparent` (and `tracestate`) for the current span to an outbound request.
pub fn inject(headers: &mut reqwest::header::HeaderMap) {
    for (name, value) in fields_of_current() {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
}

/// Continues a caller's trace, if its request carried `traceparent`.
pub fn adopt_from_headers(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    let fields: HashMap<String, String> = ["traceparent", "tracestate"]
        .iter()
        .filter_map(|name| {
            headers.get(*name).and_then(|v| v.to_str().ok()).map(|v| ((*name).to_owned(), v.to_owned()))
        })
        .collect();
    if !fields.is_empty() {
        let _ = span.set_parent(TraceContextPropagator::new().extract(&fields));
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::prelude::*;

    use super::*;

    /// Runs `f` inside a fresh span of a real tracer.
    fn in_span<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || tracing::info_span!("webhook").in_scope(f))
    }

    #[test]
    fn a_job_keeps_its_first_cause_and_links_at_most_eight_more() {
        let first = in_span(current).expect("a traced request has a context");
        let mut stored = first.clone();
        for _ in 0..12 {
            if let Some(linked) = in_span(|| with_link(Some(&stored))) {
                stored = linked;
            }
        }
        let parsed: Stored = serde_json::from_str(&stored).unwrap();
        let original: Stored = serde_json::from_str(&first).unwrap();
        assert_eq!(parsed.traceparent, original.traceparent, "the parent never changes");
        assert_eq!(parsed.links.len(), MAX_LINKS);
        assert!(parsed.links.iter().all(|l| Some(l) != original.traceparent.as_ref()));
    }

    #[test]
    fn nothing_is_stored_or_linked_outside_a_trace() {
        assert_eq!(current(), None);
        assert_eq!(with_link(None), None);
    }
}
