//! Issue #7: one trace from the stage change to the won deal, exported over OTLP/HTTP to a real
//! receiver on loopback; each agency's own receiver gets its spans and nobody else's; metrics
//! arrive under the names the README documents; no secret or personal value is in any of it.
//!
//! The binary runs as a child process: the OpenTelemetry pipeline is process-wide and is
//! installed by `pipepay serve`, exactly as in production.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use reqwest::Method;
use serde_json::json;

use crate::fakes::flutterwave::{FakeFlutterwave, Outcome, Payment, Shape, Signature, Transaction};
use crate::fakes::kommo::{AccountSpec, FakeKommo, LeadSpec};
use crate::kommo::{CLIENT_ID, CLIENT_SECRET, connect};
use crate::pipeline::eventually;
use crate::support::agent::PASSWORD;
use crate::support::process::Running;
use crate::support::{Agent, Engine, TestDb};

const WAIT: Duration = Duration::from_secs(30);
const WON: i64 = 142;

/// One span as the receiver decoded it, flattened for assertions.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: i32,
    attributes: BTreeMap<String, String>,
    links: Vec<String>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What a receiver got: decoded requests, and the headers they came with.
#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    headers: Vec<HeaderMap>,
}

/// A real OTLP/HTTP receiver (protobuf), as a collector would run it.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Received>>,
}

async fn traces(State(got): State<Arc<Mutex<Received>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    assert_eq!(headers["content-type"], "application/x-protobuf", "OTLP/HTTP binary");
    let request = ExportTraceServiceRequest::decode(body).expect("a valid OTLP trace export");
    let mut got = got.lock().unwrap();
    got.traces.push(request);
    got.headers.push(headers);
    StatusCode::OK
}

async fn metrics(State(got): State<Arc<Mutex<Received>>>, body: Bytes) -> StatusCode {
    let request = ExportMetricsServiceRequest::decode(body).expect("a valid OTLP metrics export");
    got.lock().unwrap().metrics.push(request);
    StatusCode::OK
}

impl Receiver {
    async fn start() -> Receiver {
        let got = Arc::new(Mutex::new(Received::default()));
        let app = axum::Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got }
    }

    fn spans(&self) -> Vec<Span> {
        let got = self.got.lock().unwrap();
        let mut spans = Vec::new();
        for request in &got.traces {
            for resource in &request.resource_spans {
                for scope in &resource.scope_spans {
                    for span in &scope.spans {
                        spans.push(Span {
                            trace: hex(&span.trace_id),
                            id: hex(&span.span_id),
                            parent: hex(&span.parent_span_id),
                            name: span.name.clone(),
                            kind: span.kind,
                            attributes: span
                                .attributes
                                .iter()
                                .map(|kv| {
                                    (kv.key.clone(), text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                                })
                                .collect(),
                            links: span.links.iter().map(|l| hex(&l.trace_id)).collect(),
                        });
                    }
                }
            }
        }
        spans
    }

    fn metric_names(&self) -> BTreeMap<String, String> {
        let got = self.got.lock().unwrap();
        let mut names = BTreeMap::new();
        for request in &got.metrics {
            for resource in &request.resource_metrics {
                for scope in &resource.scope_metrics {
                    for metric in &scope.metrics {
                        names.insert(metric.name.clone(), metric.unit.clone());
                    }
                }
            }
        }
        names
    }

    fn service_names(&self) -> BTreeSet<String> {
        let got = self.got.lock().unwrap();
        let mut names = BTreeSet::new();
        for request in &got.traces {
            for resource in &request.resource_spans {
                for kv in resource.resource.iter().flat_map(|r| r.attributes.iter()) {
                    if kv.key == "service.name" {
                        names.insert(text(kv.value.as_ref().and_then(|v| v.value.as_ref())));
                    }
                }
            }
        }
        names
    }

    /// Everything received, as text: what a forbidden value must not be found in.
    fn everything(&self) -> String {
        let got = self.got.lock().unwrap();
        format!("{:?}\n{:?}", got.traces, got.metrics)
    }
}

/// Whether `ancestor` is above `span` in its trace.
fn descends(all: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut parent = span.parent.clone();
    while !parent.is_empty() {
        if parent == ancestor.id {
            return true;
        }
        parent = all.iter().find(|s| s.id == parent).map(|s| s.parent.clone()).unwrap_or_default();
    }
    false
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&Any>) -> String {
    match value {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// One agency with one client account, wired to its own Kommo account and Flutterwave keys.
struct Shop {
    owner: Agent,
    agency: String,
    client: String,
    account: i64,
    secret: String,
    hash: String,
    flw_hook: String,
    ingress_token: String,
    vendor_key: String,
}

const SALES: i64 = 7001;
const NEW: i64 = 7002;
const INVOICE: i64 = 7003;

async fn open_shop(
    pipepay: &Running,
    kommo: &FakeKommo,
    flw: &FakeFlutterwave,
    tag: &str,
    account: i64,
    receiver: &Receiver,
) -> Shop {
    let mut owner = Agent::new(pipepay.url(""));
    let me = owner
        .expect(
            Method::POST,
            "/api/v1/auth/signup",
            Some(json!({"email": format!("owner@{tag}.example"), "password": PASSWORD,
                        "agency_name": format!("Agency {tag}")})),
            201,
        )
        .await;
    owner.csrf = me["csrf_token"].as_str().map(str::to_owned);
    let agency = me["agencies"][0]["id"].as_str().unwrap().to_owned();
    let created = owner
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{agency}/clients"),
            Some(json!({"name": format!("{tag} Ltd")})),
            201,
        )
        .await;
    let client = created["client"]["id"].as_str().unwrap().to_owned();
    kommo.add_account(AccountSpec {
        id: account,
        subdomain: tag.into(),
        host: format!("{tag}.kommo.com"),
        currency: "KES".into(),
    });
    kommo.add_pipeline(account, SALES, "Sales", &[NEW, INVOICE]);
    let (status, page) = connect(&owner, &agency, &client, kommo, account).await;
    assert_eq!(status, 200, "{page}");
    let secret = format!("FLWSECK_TEST-{account:032x}-X");
    let hash = format!("{tag}-webhook-hash-0123456789");
    flw.add_merchant(&secret, &hash);
    let base = format!("/api/v1/agencies/{agency}/clients/{client}");
    owner
        .expect(
            Method::PUT,
            &format!("{base}/flutterwave-keys"),
            Some(json!({"secret_key": secret, "webhook_hash": hash})),
            200,
        )
        .await;
    let settings = json!({
        "display_name": format!("{tag} Ltd"),
        "trigger": {"pipeline_id": SALES, "stage_ids": [INVOICE]},
        "checkout": {"payment_options": ["card", "mpesa"]}
    });
    owner.expect(Method::PUT, &format!("{base}/settings"), Some(settings), 200).await;
    let urls = owner.json(&format!("{base}/webhook-urls")).await;
    let flw_hook = urls["flutterwave"].as_str().unwrap().to_owned();
    let ingress_token = flw_hook.rsplit('/').nth(1).unwrap().to_owned();
    // The agency's own collector, with its vendor's key as a header.
    let vendor_key = format!("{tag}-vendor-api-key-secret");
    let view = owner
        .expect(
            Method::PUT,
            &format!("/api/v1/agencies/{agency}/telemetry"),
            Some(json!({"endpoint": receiver.url, "headers": {"x-api-key": vendor_key}})),
            200,
        )
        .await;
    assert_ne!(view["headers"]["x-api-key"], vendor_key.as_str(), "the key is shown masked");
    Shop { owner, agency, client, account, secret, hash, flw_hook, ingress_token, vendor_key }
}

/// A salesperson moves a deal with a named customer to the invoice stage; the customer pays.
async fn sell(
    kommo: &FakeKommo,
    flw: &FakeFlutterwave,
    shop: &Shop,
    lead: i64,
    customer: (&str, &str, &str),
) -> Transaction {
    let (name, email, phone) = customer;
    kommo.add_contact(shop.account, lead * 10, name, Some(email), Some(phone));
    kommo.add_lead(
        shop.account,
        LeadSpec {
            id: lead,
            name: format!("{name}'s order"),
            price: 2500,
            price_with_minor_units: None,
            pipeline_id: SALES,
            status_id: NEW,
            contact_ids: vec![lead * 10],
            custom_fields_values: None,
        },
    );
    assert_eq!(kommo.move_lead(shop.account, lead, INVOICE).await, [200]);
    eventually(WAIT, "a link note", || async { kommo.notes(shop.account, lead).len() == 1 }).await;
    // The access token expires before the payment: the next Kommo call refreshes it.
    kommo.expire_access_tokens(shop.account);
    let tx_ref = flw.created(&shop.secret)[0].tx_ref.clone();
    let paid = flw.pay(&tx_ref, Payment::by(Outcome::Successful, "mpesa"));
    assert_eq!(flw.deliver(&shop.flw_hook, &paid, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the deal won", || async {
        kommo.lead(shop.account, lead).unwrap()["status_id"].as_i64() == Some(WON)
    })
    .await;
    paid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_stage_change_to_the_won_deal_and_agencies_see_only_their_own() {
    let db = TestDb::new(Engine::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let kommo = FakeKommo::start().await;
    let flw = FakeFlutterwave::start().await;
    let (operator, agency_one, agency_two) =
        (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    let master = pipepay::vault::MasterKeys::generate_entry("otel");
    let mut env = crate::pipeline::child_env(&db, &master, &kommo, &flw);
    env.extend([
        ("PIPEPAY_TELEMETRY_ALLOW_PRIVATE", "true".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", operator.url.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000".into()),
    ]);
    let env = crate::pipeline::borrowed(&env);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pipepay = Running::start_at(dir.path(), &env, &format!("127.0.0.1:{port}"));
    kommo.register_integration(CLIENT_ID, CLIENT_SECRET, &pipepay.url("/oauth/kommo/callback"));

    let one = open_shop(&pipepay, &kommo, &flw, "one", 3001, &agency_one).await;
    let two = open_shop(&pipepay, &kommo, &flw, "two", 3002, &agency_two).await;
    let wanjiru = ("Wanjiru Kamau", "wanjiru.kamau@example.co.ke", "+254711222333");
    let kofi = ("Kofi Mensah", "kofi.mensah@example.com.gh", "+233244555666");
    let paid = sell(&kommo, &flw, &one, 41, wanjiru).await;
    sell(&kommo, &flw, &two, 42, kofi).await;
    // Flutterwave delivers the payment again (our 200 was lost, say).
    assert_eq!(flw.deliver(&one.flw_hook, &paid, Shape::V3, Signature::VerifHash).await, 200);

    // The won deal's spans are exported within a few batch delays.
    let closed = |spans: &[Span], agency: &str| {
        spans.iter().any(|s| {
            s.name == "job payment"
                && s.attr("pipepay.agency_id") == Some(agency)
                && s.attr("pipepay.outcome") == Some("done")
        })
    };
    eventually(WAIT, "both agencies' payment jobs at the operator's collector", || async {
        let spans = operator.spans();
        closed(&spans, &one.agency) && closed(&spans, &two.agency)
    })
    .await;
    eventually(WAIT, "each agency's payment job at its own collector", || async {
        closed(&agency_one.spans(), &one.agency) && closed(&agency_two.spans(), &two.agency)
    })
    .await;
    eventually(WAIT, "the redelivery's span", || async {
        operator.spans().iter().filter(|s| s.name == "POST /hooks/{token}/flutterwave").count() == 3
    })
    .await;
    eventually(WAIT, "the metrics", || async {
        let names = operator.metric_names();
        names.contains_key("pipepay.kommo.token.refreshes") && names.contains_key("pipepay.queue.depth")
    })
    .await;
    let all = operator.spans();
    assert_eq!(operator.service_names(), BTreeSet::from(["pipepay".to_owned()]));

    // One trace from Kommo's webhook: the ingress (server), the job, Kommo and Flutterwave (clients).
    for shop in [&one, &two] {
        let ingress = all
            .iter()
            .find(|s| {
                s.attr("http.route") == Some("/hooks/{token}/kommo")
                    && s.attr("pipepay.agency_id") == Some(&shop.agency)
            })
            .expect("the ingress span of Kommo's webhook");
        assert_eq!(ingress.kind, SpanKind::Server as i32);
        assert_eq!(ingress.name, "POST /hooks/{token}/kommo");
        assert_eq!(ingress.attr("http.request.method"), Some("POST"));
        assert_eq!(ingress.attr("http.response.status_code"), Some("200"));
        assert_eq!(ingress.attr("pipepay.client_id"), Some(shop.client.as_str()));
        let trace: Vec<&Span> = all.iter().filter(|s| s.trace == ingress.trace).collect();
        let job = trace.iter().find(|s| s.name == "job lead").expect("the lead job in the webhook's trace");
        assert_eq!(job.parent, ingress.id, "the job is a child of the request that caused it");
        assert_eq!(job.attr("pipepay.client_id"), Some(shop.client.as_str()));
        assert_eq!(job.attr("pipepay.agency_id"), Some(shop.agency.as_str()));
        assert_eq!(job.attr("pipepay.kommo.account_id"), Some(shop.account.to_string().as_str()));
        assert_eq!(job.attr("pipepay.job.kind"), Some("lead"));
        assert_eq!(job.attr("pipepay.job.attempt"), Some("1"));
        assert!(job.attr("pipepay.lead_id").is_some_and(|l| l == "41" || l == "42"));
        assert!(job.attr("pipepay.tx_ref").is_some_and(|t| t.starts_with("pp-")));
        assert_eq!(job.attr("pipepay.outcome"), Some("done"));
        let kommo_calls: Vec<&&Span> =
            trace.iter().filter(|s| s.attr("peer.service") == Some("kommo")).collect();
        assert!(
            kommo_calls.iter().any(|s| s.name == "GET /api/v4/leads/{id}"),
            "the lead is read: {:?}",
            kommo_calls.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        assert!(
            kommo_calls.iter().any(|s| s.name.starts_with("POST ") && s.name.contains("notes")),
            "the note"
        );
        for call in &kommo_calls {
            assert_eq!(call.kind, SpanKind::Client as i32);
            assert_eq!(call.attr("server.address"), Some("127.0.0.1"));
            assert!(call.attr("http.response.status_code").is_some(), "{call:?}");
            assert_eq!(call.attr("pipepay.kommo.account_id"), Some(shop.account.to_string().as_str()));
        }
        let create = trace
            .iter()
            .find(|s| s.name == "POST /v3/payments")
            .expect("the Flutterwave call in the webhook's trace");
        assert_eq!(create.kind, SpanKind::Client as i32);
        assert_eq!(create.attr("peer.service"), Some("flutterwave"));
        assert_eq!(create.attr("http.request.method"), Some("POST"));
        assert_eq!(create.attr("http.response.status_code"), Some("200"));
        assert!(descends(&all, create, job), "the Flutterwave call is inside the job");
        for call in &kommo_calls {
            assert!(descends(&all, call, ingress), "{} is inside the webhook's trace", call.name);
        }

        // The payment: its own trace from Flutterwave's webhook, down to the stage change.
        let paid = all
            .iter()
            .find(|s| s.name == "job payment" && s.attr("pipepay.agency_id") == Some(&shop.agency))
            .unwrap();
        assert_eq!(paid.attr("pipepay.tx_ref"), job.attr("pipepay.tx_ref"));
        let trace: Vec<&Span> = all.iter().filter(|s| s.trace == paid.trace).collect();
        assert!(trace.iter().any(|s| s.name == "POST /hooks/{token}/flutterwave" && s.id == paid.parent));
        assert!(trace.iter().any(|s| s.name == "GET /v3/transactions/{id}/verify"));
        assert!(trace.iter().any(|s| s.name == "PATCH /api/v4/leads/{id}"), "the deal moved to won");
    }

    // The redelivery did nothing new; its span links to the trace of the job the original caused.
    let payment = all
        .iter()
        .find(|s| s.name == "job payment" && s.attr("pipepay.agency_id") == Some(&one.agency))
        .unwrap();
    let deliveries: Vec<&Span> = all
        .iter()
        .filter(|s| {
            s.name == "POST /hooks/{token}/flutterwave" && s.attr("pipepay.agency_id") == Some(&one.agency)
        })
        .collect();
    assert_eq!(deliveries.len(), 2);
    let again =
        deliveries.iter().find(|s| s.trace != payment.trace).expect("the redelivery, in a trace of its own");
    assert_eq!(again.links, std::slice::from_ref(&payment.trace), "linked to the payment's trace");
    assert_eq!(
        all.iter()
            .filter(|s| s.name == "job payment" && s.attr("pipepay.agency_id") == Some(&one.agency))
            .count(),
        1
    );

    // Each agency's collector has its own spans and nothing of the other's.
    for (receiver, mine, theirs) in [(&agency_one, &one, &two), (&agency_two, &two, &one)] {
        let spans = receiver.spans();
        let my_traces: BTreeSet<&str> = all
            .iter()
            .filter(|s| s.attr("pipepay.agency_id") == Some(&mine.agency))
            .map(|s| s.trace.as_str())
            .collect();
        for span in &spans {
            assert!(
                my_traces.contains(span.trace.as_str()),
                "{} got a span not of its traces: {span:?}",
                mine.agency
            );
            assert_ne!(span.attr("pipepay.agency_id"), Some(theirs.agency.as_str()));
            assert_ne!(span.attr("pipepay.client_id"), Some(theirs.client.as_str()));
            assert_ne!(span.attr("pipepay.kommo.account_id"), Some(theirs.account.to_string().as_str()));
        }
        for name in [
            "POST /hooks/{token}/kommo",
            "job lead",
            "POST /v3/payments",
            "job payment",
            "PATCH /api/v4/leads/{id}",
        ] {
            assert!(spans.iter().any(|s| s.name == name), "{} got {name}", mine.agency);
        }
        assert!(spans.iter().any(|s| s.attr("peer.service") == Some("kommo")));
        {
            let got = receiver.got.lock().unwrap();
            assert!(
                got.headers
                    .iter()
                    .all(|h| h.get("x-api-key").and_then(|v| v.to_str().ok())
                        == Some(mine.vendor_key.as_str())),
                "every export carries the agency's own header"
            );
            assert!(got.metrics.is_empty(), "agencies get spans, not the operator's metrics");
        }
        let view = mine.owner.json(&format!("/api/v1/agencies/{}/telemetry", mine.agency)).await;
        assert!(view["delivery"]["exported_spans"].as_u64().unwrap() >= spans.len() as u64 / 2, "{view}");
        assert_eq!(view["delivery"]["dropped_spans"], 0, "{view}");
        assert!(view["delivery"]["last_error"].is_null(), "{view}");
    }

    // No secret, token or personal value anywhere.
    let mut forbidden: Vec<String> =
        vec![CLIENT_SECRET.into(), PASSWORD.into(), master.split(':').nth(1).unwrap().into()];
    for (name, email, phone) in [wanjiru, kofi] {
        forbidden.extend([name.into(), name.split(' ').next().unwrap().into(), email.into(), phone.into()]);
        forbidden.push(phone.trim_start_matches('+').into());
    }
    for shop in [&one, &two] {
        forbidden.extend([
            shop.secret.clone(),
            shop.hash.clone(),
            shop.ingress_token.clone(),
            shop.vendor_key.clone(),
            format!("owner@{}.example", if shop.account == 3001 { "one" } else { "two" }),
        ]);
        forbidden.extend(kommo.issued_tokens(shop.account));
    }
    assert!(forbidden.len() > 20);
    for receiver in [&operator, &agency_one, &agency_two] {
        let everything = receiver.everything();
        for value in &forbidden {
            assert!(!everything.contains(value.as_str()), "{value:?} was exported");
        }
    }

    let names = operator.metric_names();
    for (name, unit) in [
        ("pipepay.webhooks.received", "{webhook}"),
        ("pipepay.queue.depth", "{job}"),
        ("pipepay.queue.age", "s"),
        ("pipepay.job.duration", "s"),
        ("pipepay.upstream.duration", "s"),
        ("pipepay.kommo.rate_limit.wait", "s"),
        ("pipepay.kommo.token.refreshes", "{refresh}"),
        ("pipepay.kommo.connections", "{connection}"),
    ] {
        assert_eq!(names.get(name).map(String::as_str), Some(unit), "{name} in {names:?}");
    }
    pipepay.terminate();
}
