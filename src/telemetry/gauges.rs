//! Gauges read from the database: queue depth and age by state, Kommo connections by health.
//! A sampler refreshes them in the background; the exporter reads the last sample, so an
//! export never waits on the database.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::store::kommo::health;
use crate::store::{Db, stats};

/// States and healths reported even at zero, so a drained queue reads 0 rather than vanishing.
const STATES: [&str; 3] = ["ready", "running", "dead"];
const HEALTHS: [&str; 5] =
    [health::ACTIVE, health::NEEDS_REAUTH, health::REVOKED, health::PAYMENT_REQUIRED, health::BLOCKED];

/// Sampling faster than the exporter reads is wasted queries: sample at the export interval
/// (`OTEL_METRIC_EXPORT_INTERVAL`, in ms, 60 s by default), within 1 s to 60 s.
fn every() -> Duration {
    let ms = std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60_000);
    Duration::from_millis(ms.clamp(1_000, 60_000))
}

/// Adds a zero row for every known key the query did not return.
fn with_zeros<T: Clone>(mut rows: Vec<(String, i64, T)>, keys: &[&str], zero: T) -> Vec<(String, i64, T)> {
    for key in keys {
        if !rows.iter().any(|(k, _, _)| k == key) {
            rows.push(((*key).to_owned(), 0, zero.clone()));
        }
    }
    rows
}

#[derive(Default)]
struct Sample {
    /// (state, jobs, oldest created_at; `at` when there are none)
    queue: Vec<(String, i64, i64)>,
    connections: Vec<(String, i64, ())>,
    at: i64,
}

/// Registers the gauges and samples until `stop`.
pub async fn run(db: Db, stop: CancellationToken) {
    let sample = Arc::new(Mutex::new(Sample::default()));
    let meter = opentelemetry::global::meter("pipepay");
    let read = sample.clone();
    let _depth = meter
        .i64_observable_gauge("pipepay.queue.depth")
        .with_description("Jobs by state")
        .with_unit("{job}")
        .with_callback(move |gauge| {
            if let Ok(s) = read.lock() {
                for (state, count, _) in &s.queue {
                    gauge.observe(*count, &[KeyValue::new("state", state.clone())]);
                }
            }
        })
        .build();
    let read = sample.clone();
    let _age = meter
        .f64_observable_gauge("pipepay.queue.age")
        .with_description("Age of the oldest job, by state")
        .with_unit("s")
        .with_callback(move |gauge| {
            if let Ok(s) = read.lock() {
                for (state, _, oldest) in &s.queue {
                    let age = (s.at - oldest).max(0) as f64 / 1000.0;
                    gauge.observe(age, &[KeyValue::new("state", state.clone())]);
                }
            }
        })
        .build();
    let read = sample.clone();
    let _connections = meter
        .i64_observable_gauge("pipepay.kommo.connections")
        .with_description("Kommo connections by health")
        .with_unit("{connection}")
        .with_callback(move |gauge| {
            if let Ok(s) = read.lock() {
                for (health, count, ()) in &s.connections {
                    gauge.observe(*count, &[KeyValue::new("health", health.clone())]);
                }
            }
        })
        .build();
    let every = every();
    loop {
        let queue = stats::queue(&db).await;
        let connections = stats::connections(&db).await;
        match (queue, connections) {
            (Ok(queue), Ok(connections)) => {
                let at = now_ms();
                let queue = with_zeros(queue, &STATES, at);
                let connections =
                    with_zeros(connections.into_iter().map(|(h, n)| (h, n, ())).collect(), &HEALTHS, ());
                if let Ok(mut s) = sample.lock() {
                    *s = Sample { queue, connections, at };
                }
            }
            (Err(error), _) | (_, Err(error)) => tracing::debug!(%error, "could not sample the gauges"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
