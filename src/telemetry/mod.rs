//! Logs, traces and metrics. Logs go to stdout (human or JSON). Traces and metrics go over
//! OTLP/HTTP when OpenTelemetry's standard variables name an endpoint
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_BSP_SCHEDULE_DELAY`, ...), and
//! an agency's spans also to the endpoint it configured (see [`agency`]).

pub mod agency;
pub mod calls;
pub mod context;
pub mod gauges;
pub mod metrics;
pub mod targets;

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use self::agency::{AgencyRouter, AgencyRoutes};
use crate::config::LogFormat;

/// The telemetry pipelines of this process; flushed and stopped by [`Telemetry::shutdown`].
pub struct Telemetry {
    traces: SdkTracerProvider,
    metrics: Option<SdkMeterProvider>,
}

static AGENCY_ROUTES: OnceLock<Arc<AgencyRoutes>> = OnceLock::new();

/// The agency routes of the installed tracer, if telemetry was initialised in this process.
pub fn agency_routes() -> Option<Arc<AgencyRoutes>> {
    AGENCY_ROUTES.get().cloned()
}

/// Whether an OTLP endpoint is configured for `signal` (traces or metrics).
fn endpoint_set(signal: &str) -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let general = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty());
    let specific =
        std::env::var(format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).is_ok_and(|v| !v.is_empty());
    !disabled && (general || specific)
}

/// Installs the process-wide subscriber: logs, and the OpenTelemetry layer. Fails if one is
/// installed already.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<Telemetry> {
    // The OTLP exporters build their own HTTP clients.
    crate::install_tls_provider();
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still win; unset, the service is "pipepay"
    // rather than the SDK's "unknown_service".
    let mut resource = Resource::builder();
    let named_in_attributes =
        std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if std::env::var("OTEL_SERVICE_NAME").is_err() && !named_in_attributes {
        resource = resource.with_service_name("pipepay");
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let routes = Arc::new(AgencyRoutes::default());
    let mut traces = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_span_processor(AgencyRouter::new(routes.clone()));
    if endpoint_set("TRACES") {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()?;
        traces = traces.with_batch_exporter(exporter);
    }
    let traces = traces.build();
    let metrics = if endpoint_set("METRICS") {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()?;
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(PeriodicReader::builder(exporter).build())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Some(provider)
    } else {
        None
    };
    let _ = AGENCY_ROUTES.set(routes);
    let otel = tracing_opentelemetry::layer().with_tracer(traces.tracer("pipepay"));

    let registry = tracing_subscriber::registry().with(EnvFilter::try_new(filter)?).with(otel);
    match format {
        LogFormat::Human => registry
            .with(fmt::layer().with_target(false).with_ansi(std::io::stdout().is_terminal()))
            .try_init()?,
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init()?,
    }
    Ok(Telemetry { traces, metrics })
}

impl Telemetry {
    /// Exports what is buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Err(error) = self.traces.shutdown() {
            tracing::debug!(%error, "trace export did not shut down cleanly");
        }
        if let Some(metrics) = self.metrics
            && let Err(error) = metrics.shutdown()
        {
            tracing::debug!(%error, "metric export did not shut down cleanly");
        }
    }
}
