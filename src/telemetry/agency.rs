//! Agencies monitor their own: spans of an agency's client accounts go, besides the operator's
//! collector, to the OTLP/HTTP endpoint the agency configured, and never another agency's.
//!
//! A span belongs to an agency if it says so (`pipepay.agency_id`, set on ingress and job spans)
//! or if its parent does (client calls inside a job). Each configured agency has a bounded
//! queue and an export thread of its own: a slow or broken collector fills its own queue, whose
//! overflow is dropped and counted, and never slows the pipeline or other agencies.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use opentelemetry::trace::{Span as _, SpanId, TraceContextExt};
use opentelemetry::{Context, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use super::metrics::{kv, metrics};
use super::targets::is_global;

/// The attribute that names a span's agency.
pub const AGENCY_ATTRIBUTE: &str = "pipepay.agency_id";
const QUEUE: usize = 2048;
const BATCH: usize = 512;
const LINGER: Duration = Duration::from_millis(200);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where each agency's spans go.
#[derive(Default)]
pub struct AgencyRoutes {
    pipes: RwLock<HashMap<String, Pipe>>,
    resource: RwLock<Option<Resource>>,
    /// `PIPEPAY_TELEMETRY_ALLOW_PRIVATE`: agencies may reach private addresses.
    allow_private: AtomicBool,
}

/// Resolves names and refuses any that lead outside the public internet: an endpoint checked
/// as public when saved may later resolve elsewhere (DNS rebinding). The addresses it returns
/// are the only ones the client connects to.
pub(crate) struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.iter().any(|addr| !is_global(addr.ip())) {
                let refused = std::io::Error::other(format!("{host} resolves to a non-public address"));
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of one agency's exporter: no redirects, and no private targets unless allowed.
fn http_client(allow_private: bool) -> reqwest::Result<reqwest::blocking::Client> {
    crate::install_tls_provider();
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if !allow_private {
        // Through a proxy, the proxy would resolve and connect to the agency's host, out of
        // the resolver's sight.
        builder = builder.dns_resolver(Arc::new(PublicOnly)).no_proxy();
    }
    builder.build()
}

/// Why the client must not connect to `url` at all: the resolver never sees an IP literal, so
/// the address written in the URL is the one connected to and is judged here.
pub(crate) fn refused_target(url: &str, allow_private: bool) -> Option<String> {
    if allow_private {
        return None;
    }
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(error) => return Some(format!("not a URL: {error}")),
    };
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(_)) => return None,
        None => return Some("the endpoint has no host".to_owned()),
    };
    (!is_global(literal)).then(|| format!("{literal} is not a public address"))
}

impl std::fmt::Debug for AgencyRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgencyRoutes")
    }
}

struct Pipe {
    tx: SyncSender<SpanData>,
    /// What the pipe was built from, to notice a changed endpoint or headers.
    signature: u64,
    stats: Arc<Stats>,
}

/// Counters an agency sees next to its settings, so a wrong endpoint or key shows up there.
#[derive(Default)]
struct Stats {
    exported: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    fn drop_spans(&self, count: usize) {
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        self.dropped.fetch_add(count, Ordering::Relaxed);
        metrics().spans_dropped.add(count, &[kv("destination", "agency")]);
    }
}

/// How an agency's export has gone in this process since its settings last changed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub exported_spans: u64,
    /// Spans lost to a full buffer or a failed export.
    pub dropped_spans: u64,
    /// The last export failure, if the latest export failed.
    pub last_error: Option<String>,
}

impl AgencyRoutes {
    /// Points the agency's spans at `endpoint` with `headers`; rebuilds only if they changed.
    pub fn configure(&self, agency: &str, endpoint: &str, headers: &HashMap<String, String>) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        endpoint.hash(&mut hasher);
        let mut sorted: Vec<_> = headers.iter().collect();
        sorted.sort();
        sorted.hash(&mut hasher);
        let signature = hasher.finish();
        if self.pipes.read().is_ok_and(|p| p.get(agency).is_some_and(|pipe| pipe.signature == signature)) {
            return;
        }
        let resource =
            self.resource.read().ok().and_then(|r| r.clone()).unwrap_or_else(|| Resource::builder().build());
        let allow_private = self.allow_private.load(Ordering::Relaxed);
        let pipe = spawn(
            agency.to_owned(),
            traces_url(endpoint),
            headers.clone(),
            resource,
            signature,
            allow_private,
        );
        if let Ok(mut pipes) = self.pipes.write() {
            // Dropping the old sender ends the old thread once it has flushed.
            pipes.insert(agency.to_owned(), pipe);
        }
    }

    /// Keeps only the agencies in `configured`.
    pub fn retain(&self, configured: &[String]) {
        if let Ok(mut pipes) = self.pipes.write() {
            pipes.retain(|agency, _| configured.contains(agency));
        }
    }

    fn send(&self, agency: &str, span: SpanData) {
        let Ok(pipes) = self.pipes.read() else { return };
        let Some(pipe) = pipes.get(agency) else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = pipe.tx.try_send(span) {
            pipe.stats.drop_spans(1);
        }
    }

    /// The agency's export counters, if its spans are exported from this process.
    pub fn delivery(&self, agency: &str) -> Option<Delivery> {
        let pipes = self.pipes.read().ok()?;
        let stats = &pipes.get(agency)?.stats;
        Some(Delivery {
            exported_spans: stats.exported.load(Ordering::Relaxed),
            dropped_spans: stats.dropped.load(Ordering::Relaxed),
            last_error: stats.last_error.lock().ok().and_then(|e| e.clone()),
        })
    }

    pub fn allow_private(&self, allow: bool) {
        self.allow_private.store(allow, Ordering::Relaxed);
    }

    pub fn set_resource(&self, resource: &Resource) {
        if let Ok(mut slot) = self.resource.write() {
            *slot = Some(resource.clone());
        }
    }

    fn close(&self) {
        if let Ok(mut pipes) = self.pipes.write() {
            pipes.clear();
        }
    }
}

/// `https://otlp.example` → `https://otlp.example/v1/traces`; a full traces URL is kept.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if trimmed.ends_with("/v1/traces") { trimmed.to_owned() } else { format!("{trimmed}/v1/traces") }
}

fn spawn(
    agency: String,
    url: String,
    headers: HashMap<String, String>,
    resource: Resource,
    signature: u64,
    allow_private: bool,
) -> Pipe {
    let (tx, rx) = mpsc::sync_channel::<SpanData>(QUEUE);
    let stats = Arc::new(Stats::default());
    let counted = stats.clone();
    let spawned = std::thread::Builder::new().name("otlp-agency".into()).spawn(move || {
        if let Some(refused) = refused_target(&url, allow_private) {
            tracing::warn!(%agency, %refused, "not exporting to the agency's OTLP endpoint");
            if let Ok(mut last) = counted.last_error.lock() {
                *last = Some(refused);
            }
            // Ending here drops the receiver: every span sent from now on is counted as dropped.
            return;
        }
        // Built on this thread: the blocking HTTP client must not live inside the async runtime.
        let client = match http_client(allow_private) {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%agency, %error, "cannot build the agency's OTLP client");
                return;
            }
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_headers(headers)
            .with_timeout(EXPORT_TIMEOUT)
            .build();
        let mut exporter = match exporter {
            Ok(exporter) => exporter,
            Err(error) => {
                tracing::warn!(%agency, %error, "cannot export to the agency's OTLP endpoint");
                return;
            }
        };
        exporter.set_resource(&resource);
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let until = Instant::now() + LINGER;
            let mut open = true;
            while batch.len() < BATCH {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(span) => batch.push(span),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let size = batch.len();
            let outcome = futures_executor::block_on(exporter.export(batch));
            let error = match outcome {
                Ok(()) => {
                    counted.exported.fetch_add(u64::try_from(size).unwrap_or(u64::MAX), Ordering::Relaxed);
                    None
                }
                Err(error) => {
                    counted.drop_spans(size);
                    Some(error.to_string().chars().take(300).collect())
                }
            };
            if let Ok(mut last) = counted.last_error.lock() {
                *last = error;
            }
            if !open {
                break;
            }
        }
        let _ = exporter.shutdown();
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start an agency's span export thread");
    }
    Pipe { tx, signature, stats }
}

/// The span processor that routes spans to their agency's pipe.
#[derive(Debug)]
pub struct AgencyRouter {
    routes: Arc<AgencyRoutes>,
    owners: Mutex<HashMap<SpanId, String>>,
}

impl AgencyRouter {
    pub fn new(routes: Arc<AgencyRoutes>) -> AgencyRouter {
        AgencyRouter { routes, owners: Mutex::new(HashMap::new()) }
    }
}

fn agency_of(attributes: &[opentelemetry::KeyValue]) -> Option<String> {
    attributes.iter().find(|kv| kv.key.as_str() == AGENCY_ATTRIBUTE).and_then(|kv| match &kv.value {
        Value::String(s) if !s.as_str().is_empty() => Some(s.as_str().to_owned()),
        _ => None,
    })
}

impl SpanProcessor for AgencyRouter {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        let own = span.exported_data().and_then(|data| agency_of(&data.attributes));
        let Ok(mut owners) = self.owners.lock() else { return };
        let agency = own.or_else(|| owners.get(&cx.span().span_context().span_id()).cloned());
        if let Some(agency) = agency {
            owners.insert(span.span_context().span_id(), agency);
        }
    }

    fn on_end(&self, span: SpanData) {
        let known = self.owners.lock().ok().and_then(|mut o| o.remove(&span.span_context.span_id()));
        if let Some(agency) = known.or_else(|| agency_of(&span.attributes)) {
            self.routes.send(&agency, span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.routes.close();
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.routes.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceId, TraceState};

    use super::*;

    fn span(n: u64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(u128::from(n) + 1),
                SpanId::from(n + 1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "job lead".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: vec![opentelemetry::KeyValue::new(AGENCY_ATTRIBUTE, "a")],
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    #[test]
    fn a_collector_that_never_answers_costs_a_bounded_buffer_and_counted_drops() {
        // Accepts connections and never answers: the export thread waits out its timeout.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(4).collect();
            std::thread::sleep(Duration::from_secs(30));
            drop(held);
        });
        let routes = AgencyRoutes::default();
        // The collector is on loopback, as in a private deployment.
        routes.allow_private(true);
        routes.configure("a", &endpoint, &HashMap::new());
        let sent = 5_000;
        for n in 0..sent {
            routes.send("a", span(n));
            routes.send("b", span(n)); // no route: not buffered anywhere
        }
        let delivery = routes.delivery("a").unwrap();
        // At most one batch in flight plus a full buffer is held; the rest were counted, and
        // sending never waited (try_send).
        let held = u64::try_from(BATCH + QUEUE).unwrap();
        assert!(delivery.dropped_spans >= sent - held, "{delivery:?}");
        assert!(delivery.dropped_spans <= sent - u64::try_from(QUEUE).unwrap(), "{delivery:?}");
        assert_eq!(delivery.exported_spans, 0);
        assert!(routes.delivery("b").is_none());
    }

    #[test]
    fn names_that_resolve_into_the_operators_network_are_refused_at_export() {
        let client = http_client(false).unwrap();
        let refused = client.get("http://localhost:9/v1/traces").send().unwrap_err();
        assert!(format!("{refused:?}").contains("resolves to a non-public address"), "{refused:?}");
    }

    #[test]
    fn an_ip_literal_endpoint_into_the_operators_network_is_refused_at_export() {
        // A collector on loopback that would accept (and never answer) if it were reached.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let routes = AgencyRoutes::default();
        // Saved while private targets were allowed, or written past the API's check.
        routes.configure("a", &format!("http://{}", listener.local_addr().unwrap()), &HashMap::new());
        for n in 0..3 {
            routes.send("a", span(n));
        }
        let waited = Instant::now();
        let delivery = loop {
            let delivery = routes.delivery("a").unwrap();
            if delivery.last_error.is_some() || waited.elapsed() > Duration::from_secs(20) {
                break delivery;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let error = delivery.last_error.clone().unwrap_or_default();
        assert!(error.contains("127.0.0.1 is not a public address"), "{delivery:?}");
        assert_eq!(delivery.exported_spans, 0);
        assert!(
            matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the exporter connected to the private address"
        );
        for n in 3..6 {
            routes.send("a", span(n));
        }
        assert!(routes.delivery("a").unwrap().dropped_spans >= 3, "spans for a refused target are counted");

        // With private targets allowed (the operator's own deployment), the same literal is used.
        assert_eq!(refused_target("http://127.0.0.1:4318/v1/traces", true), None);
        assert_eq!(refused_target("https://otlp.example.com/v1/traces", false), None);
        assert!(refused_target("http://[::ffff:10.0.0.1]/v1/traces", false).is_some());
        assert!(refused_target("http://100.64.0.1/v1/traces", false).is_some());
    }

    #[test]
    fn endpoints_get_the_traces_path_once() {
        assert_eq!(traces_url("https://otlp.example"), "https://otlp.example/v1/traces");
        assert_eq!(traces_url("https://otlp.example/"), "https://otlp.example/v1/traces");
        assert_eq!(traces_url("https://otlp.example/v1/traces"), "https://otlp.example/v1/traces");
    }
}
