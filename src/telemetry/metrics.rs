//! pipepay's metrics. Names and units are documented in the README; with no OTLP endpoint the
//! global meter is a no-op and recording costs next to nothing.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

pub struct Metrics {
    /// `pipepay.webhooks.received` {source, outcome}
    pub webhooks: Counter<u64>,
    /// `pipepay.job.duration` (s) {kind, outcome}
    pub job_duration: Histogram<f64>,
    /// `pipepay.upstream.duration` (s) {vendor, operation, status}
    pub upstream_duration: Histogram<f64>,
    /// `pipepay.kommo.rate_limit.wait` (s)
    pub rate_limit_wait: Histogram<f64>,
    /// `pipepay.kommo.token.refreshes` {outcome}
    pub token_refreshes: Counter<u64>,
    /// `pipepay.telemetry.spans.dropped` {destination}
    pub spans_dropped: Counter<u64>,
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = opentelemetry::global::meter("pipepay");
        Metrics {
            webhooks: meter
                .u64_counter("pipepay.webhooks.received")
                .with_description("Webhooks received, by source and what became of them")
                .with_unit("{webhook}")
                .build(),
            job_duration: meter
                .f64_histogram("pipepay.job.duration")
                .with_description("How long a job ran, by kind and outcome")
                .with_unit("s")
                .build(),
            upstream_duration: meter
                .f64_histogram("pipepay.upstream.duration")
                .with_description("Calls to Kommo and Flutterwave, by vendor, operation and HTTP status")
                .with_unit("s")
                .build(),
            rate_limit_wait: meter
                .f64_histogram("pipepay.kommo.rate_limit.wait")
                .with_description("Time a Kommo call waited for its account's rate limit")
                .with_unit("s")
                .build(),
            token_refreshes: meter
                .u64_counter("pipepay.kommo.token.refreshes")
                .with_description("Kommo token refreshes, by outcome")
                .with_unit("{refresh}")
                .build(),
            spans_dropped: meter
                .u64_counter("pipepay.telemetry.spans.dropped")
                .with_description("Spans dropped because an export buffer was full")
                .with_unit("{span}")
                .build(),
        }
    })
}

pub fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}
