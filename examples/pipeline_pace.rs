//! Pipeline pacing, repeatable: see BENCHMARKS.md ("Pipeline pacing") for figures.
//!
//! Starts pipepay in this process on a fresh database (a temporary SQLite file, or a schema of
//! its own in the PostgreSQL named by `--database-url`, dropped at the end) against the stateful
//! fakes of Kommo and Flutterwave the integration tests use (compiled in through `#[path]`),
//! reached through a proxy that adds `--latency-ms` to every exchange (half before the fake sees
//! the request, half after it answers) and times each one. The Kommo fake answers 429 past 7
//! requests in any second per account, as Kommo does.
//!
//! `--accounts` client accounts are connected (OAuth tokens from the fake, sealed as pipepay
//! stores them), each with a trigger stage, a currency, a lead field for the link and `--deals`
//! deals in the trigger stage. One stage-change webhook per deal goes to pipepay's Kommo ingress,
//! and every job then does what a real one does: read the lead, read its contact, create a
//! Flutterwave payment link, post the note, write the link into the lead's field.
//!
//! Printed, over the measured window (after `--warmup`): completed pipelines (note posted) per
//! second, overall and per account; Kommo requests per second per account against the 7
//! allowed (the pacing ratio); every 429 and the most requests any account had in one second;
//! pipepay's own time per pipeline (the job's wall time minus the time the proxy spent on its
//! upstream calls and minus its waits on the rate limiter) with p50/p99; RSS.
//!
//! ```text
//! cargo run --release --example pipeline_pace -- --duration 20
//! cargo run --release --example pipeline_pace -- --database-url postgres://postgres@127.0.0.1:5432/test
//! ```

#[path = "support/bench_db.rs"]
mod bench_db;

#[allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "../tests/it/fakes/flutterwave.rs"]
mod fake_flutterwave;
#[allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "../tests/it/fakes/kommo.rs"]
mod fake_kommo;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bench_db::fresh_database;
use clap::Parser;
use fake_flutterwave::FakeFlutterwave;
use fake_kommo::{AccountSpec, FakeKommo, LeadSpec};
use pipepay::app::Application;
use pipepay::auth::tokens;
use pipepay::ids::{AgencyId, ClientId};
use pipepay::kommo::tokens::{ACCESS_TOKEN, REFRESH_TOKEN};
use pipepay::store::agencies::AgencyRow;
use pipepay::store::clients::ClientRow;
use pipepay::store::kommo::{ConnectionRow, health};
use pipepay::store::{self, Db};
use pipepay::tenants::flutterwave_keys::{SECRET_KEY, WEBHOOK_HASH};
use pipepay::tenants::settings::Trigger;
use pipepay::tenants::{ClientSettings, secrets};
use pipepay::vault::{MasterKeys, Secret, Vault};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing::span;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Kommo's limit per account (kommo.md §5), which the fake enforces.
const KOMMO_LIMIT: f64 = 7.0;
/// The one pipeline of every account, its trigger stage, the lead field for the link.
const PIPELINE: i64 = 7_001;
const TRIGGER_STAGE: i64 = 7_101;
const LINK_FIELD: i64 = 7_201;
const CONTACT: i64 = 7_301;
/// The OAuth integration pipepay's tokens were issued to.
const INTEGRATION: &str = "3f1c2f5e-pace-4d7b-9a55-benchmark000";
const INTEGRATION_SECRET: &str = "pace-secret";
const REDIRECT: &str = "http://pipepay.test/oauth/kommo/callback";

#[derive(Debug, Parser)]
#[command(about = "Pipeline pacing against rate-limited fakes with latency (see BENCHMARKS.md)")]
struct Args {
    /// Database for pipepay: unset for a temporary SQLite file; a `postgres://` URL gets a fresh
    /// schema of its own, dropped afterwards.
    #[arg(long)]
    database_url: Option<String>,
    /// pipepay's database pool size (PIPEPAY_DATABASE_MAX_CONNECTIONS).
    #[arg(long, default_value_t = 10)]
    database_max_connections: u32,
    /// Connected client accounts, each its own Kommo account.
    #[arg(long, default_value_t = 200)]
    accounts: usize,
    /// Deals per account moved into the trigger stage (one webhook each); 0: enough that no
    /// account runs out before the end.
    #[arg(long, default_value_t = 0)]
    deals: usize,
    /// Seconds of load, the warm-up included.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds at the start left out of the figures (webhooks arriving, connections opening).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Round-trip latency the proxy adds to every Kommo and Flutterwave call, in milliseconds.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// pipepay's job workers (PIPEPAY_WORKERS, at most 256); 0: one per account, so that
    /// every account can have its job running.
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

/// The server binary's allocator (see `src/main.rs`), so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.accounts == 0 || args.duration <= args.warmup {
        bail!("--accounts must be at least 1 and --duration longer than --warmup");
    }
    pipepay::install_tls_provider();
    let jobs = JobLog::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(jobs.clone()))
        .context("installing the job timer")?;
    run(&args, jobs).await
}

async fn run(args: &Args, jobs: JobLog) -> anyhow::Result<()> {
    let kommo = FakeKommo::start().await;
    let flutterwave = FakeFlutterwave::start().await;
    kommo.register_integration(INTEGRATION, INTEGRATION_SECRET, REDIRECT);
    let accounts: Vec<Account> = (0..args.accounts).map(Account::new).collect();
    let proxy = Proxy::start(&kommo, &flutterwave, &accounts, Duration::from_millis(args.latency_ms)).await?;

    let (database, _guard) = fresh_database(args.database_url.as_deref(), "pipepay_pace").await?;
    let master_keys = MasterKeys::generate_entry("pace");
    let pool = args.database_max_connections.to_string();
    let workers = if args.workers == 0 { args.accounts.clamp(1, 256) } else { args.workers };
    let workers = workers.to_string();
    let kommo_api = format!("{}/kommo/{{host}}", proxy.base);
    let flutterwave_api = format!("{}/flw/", proxy.base);
    let argv = [
        "pipepay",
        "--database-url",
        database.as_str(),
        "--database-max-connections",
        pool.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--master-keys",
        master_keys.as_str(),
        "--kommo-client-id",
        INTEGRATION,
        "--kommo-client-secret",
        INTEGRATION_SECRET,
        "--kommo-api-url",
        kommo_api.as_str(),
        "--flutterwave-api-url",
        flutterwave_api.as_str(),
        "--workers",
        workers.as_str(),
        // 200 accounts at 7 a second each is 1,400 a second from one process: the per-process
        // ceiling (an operator's setting, 100 by default) would be the limit, not the pacing.
        "--kommo-process-rate-limit",
        "10000",
    ];
    let config = <pipepay::cli::Cli as Parser>::try_parse_from(argv).context("pipepay settings")?.config;
    let app = Application::build(config).await.context("starting pipepay")?;
    let addr = app.local_addr();
    let db = app.state().db.clone();
    let vault = app.state().vault.clone();

    let deals = if args.deals == 0 {
        // A pipeline is four Kommo calls, so an account finishes at most 7/4 a second.
        (args.duration as usize * 2) + 10
    } else {
        args.deals
    };
    let started = Instant::now();
    let tokens = seed(&db, &vault, &kommo, &flutterwave, &accounts, deals).await.context("seeding")?;
    println!(
        "target: pipepay on {} ({} pool connections, {workers} workers), {} connected client accounts \
         with {deals} deals each, seeded in {:.1} s; fakes behind {} ms of latency",
        db.backend().name(),
        args.database_max_connections,
        accounts.len(),
        started.elapsed().as_secs_f64(),
        args.latency_ms,
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    println!("RSS idle after seeding: {}", rss());

    let t0 = Instant::now();
    let window_start = t0 + Duration::from_secs(args.warmup);
    let end = t0 + Duration::from_secs(args.duration);
    // Both readings on the window's own clock: sending the webhooks may outlast the window, and
    // CPU read after it would be charged to the pipelines inside it.
    let cpu_at = |at: Instant| {
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            cpu_time()
        })
    };
    let (cpu_start, cpu_end) = (cpu_at(window_start), cpu_at(end));
    proxy.calls.lock().map_err(|_| anyhow::anyhow!("proxy log poisoned"))?.clear();
    let refused = send_webhooks(addr, &accounts, &tokens, deals).await?;
    println!(
        "webhooks: {} sent in {:.1} s, refused: {refused}",
        accounts.len() * deals,
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep_until(end.into()).await;
    let cpu_end = cpu_end.await.ok().flatten();
    let cpu_start = cpu_start.await.ok().flatten();
    let rss_end = rss();
    let _ = stop.send(());
    server.await.context("pipepay task")?.context("pipepay stopping")?;

    let window = (t0 + Duration::from_secs(args.warmup), end);
    report(args, &accounts, &kommo, &proxy, &jobs, window, (cpu_start, cpu_end))?;
    println!("RSS at the end: {rss_end}");
    Ok(())
}

/// One client account: its Kommo account and its Flutterwave merchant.
struct Account {
    kommo_id: i64,
    host: String,
    secret_key: String,
    webhook_hash: String,
}

impl Account {
    fn new(index: usize) -> Account {
        Account {
            kommo_id: 31_000_000 + index as i64,
            host: format!("pace{index}.kommo.com"),
            secret_key: format!("FLWSECK_TEST-{:032x}-X", index + 1),
            webhook_hash: format!("pace-hash-{index}"),
        }
    }

    fn lead_id(&self, deal: usize) -> i64 {
        self.kommo_id * 1_000 + deal as i64
    }
}

/// Sets the accounts up at the fakes and in pipepay's store (what connecting Kommo, setting the
/// keys and the settings store, without the API's audit entries); returns each account's
/// ingress token.
async fn seed(
    db: &Db,
    vault: &Vault,
    kommo: &FakeKommo,
    flutterwave: &FakeFlutterwave,
    accounts: &[Account],
    deals: usize,
) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let now = pipepay::clock::now_ms();
    let agency = AgencyId::new();
    let mut tx = db.write().await?;
    store::agencies::insert(&mut tx, &AgencyRow { id: agency, name: "pace".into(), created_at: now }).await?;
    tx.commit().await?;
    let mut ingress_tokens = Vec::with_capacity(accounts.len());
    for (i, account) in accounts.iter().enumerate() {
        let subdomain = account.host.split('.').next().unwrap_or_default().to_owned();
        kommo.add_account(AccountSpec {
            id: account.kommo_id,
            subdomain: subdomain.clone(),
            host: account.host.clone(),
            currency: "NGN".into(),
        });
        kommo.add_pipeline(account.kommo_id, PIPELINE, "Sales", &[TRIGGER_STAGE]);
        kommo.add_lead_custom_field(account.kommo_id, LINK_FIELD, "Payment link", "url");
        kommo.add_contact(
            account.kommo_id,
            CONTACT,
            "Ada Obi",
            Some("ada@example.com"),
            Some("+2348000000000"),
        );
        for deal in 0..deals {
            kommo.add_lead(
                account.kommo_id,
                LeadSpec {
                    id: account.lead_id(deal),
                    name: format!("Deal {deal}"),
                    price: 1500,
                    price_with_minor_units: Some("1500.50".into()),
                    pipeline_id: PIPELINE,
                    status_id: TRIGGER_STAGE,
                    contact_ids: vec![CONTACT],
                    custom_fields_values: None,
                },
            );
        }
        flutterwave.add_merchant(&account.secret_key, &account.webhook_hash);
        let (access, refresh) = kommo_tokens(&http, kommo, account).await?;

        let mut settings = ClientSettings::new(&format!("pace {i}"));
        settings.trigger = Some(Trigger { pipeline_id: PIPELINE, stage_ids: vec![TRIGGER_STAGE] });
        settings.currency = Some("NGN".into());
        settings.link_field_id = Some(LINK_FIELD);
        let row = ClientRow {
            id: ClientId::new(),
            agency_id: agency,
            name: settings.display_name.clone(),
            settings: serde_json::to_string(&settings)?,
            created_at: now,
            updated_at: now,
        };
        let (token, token_hash) = tokens::generate(tokens::INGRESS_PREFIX);
        let mut tx = db.write().await?;
        store::clients::insert(&mut tx, &row, &token_hash).await?;
        store::data_keys::insert(&mut tx, &vault.new_data_key(row.id)?).await?;
        secrets::put(&mut tx, vault, row.id, SECRET_KEY, &Secret::new(account.secret_key.clone())).await?;
        secrets::put(&mut tx, vault, row.id, WEBHOOK_HASH, &Secret::new(account.webhook_hash.clone()))
            .await?;
        let access = vault.seal(&mut tx, row.id, ACCESS_TOKEN, &Secret::new(access)).await?;
        let refresh = vault.seal(&mut tx, row.id, REFRESH_TOKEN, &Secret::new(refresh)).await?;
        store::kommo::upsert_connection(
            &mut tx,
            &ConnectionRow {
                client_id: row.id,
                account_id: account.kommo_id,
                host: account.host.clone(),
                subdomain,
                account_name: format!("Pace {i}"),
                currency: Some("NGN".into()),
                access_token: Some(access),
                refresh_token: Some(refresh),
                access_expires_at: Some(now + 86_400_000),
                token_version: 0,
                refresh_owner: None,
                refresh_until: None,
                refreshed_at: now,
                health: health::ACTIVE.into(),
                health_reason: None,
                health_changed_at: now,
                webhook_status: "manual".into(),
                webhook_detail: None,
                connected_at: now,
                updated_at: now,
            },
        )
        .await?;
        tx.commit().await?;
        ingress_tokens.push(token.expose().to_owned());
    }
    Ok(ingress_tokens)
}

/// Consent and code exchange at the fake, as pipepay's OAuth callback does them.
async fn kommo_tokens(
    http: &reqwest::Client,
    kommo: &FakeKommo,
    account: &Account,
) -> anyhow::Result<(String, String)> {
    let redirect = url::Url::parse(&kommo.authorize(account.kommo_id, None))?;
    let code =
        redirect.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).context("no code")?;
    let answer: Value = http
        .post(format!("{}/{}/oauth2/access_token", kommo.base(), account.host))
        .json(&json!({
            "client_id": INTEGRATION, "client_secret": INTEGRATION_SECRET,
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let field = |name: &str| answer[name].as_str().map(str::to_owned).context("no token in the answer");
    Ok((field("access_token")?, field("refresh_token")?))
}

/// One stage-change webhook per deal, as Kommo sends them (form-encoded v2), deal by deal
/// across the accounts; returns how many were not answered 200.
async fn send_webhooks(
    addr: std::net::SocketAddr,
    accounts: &[Account],
    tokens: &[String],
    deals: usize,
) -> anyhow::Result<u64> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let refused = Arc::new(AtomicU64::new(0));
    for deal in 0..deals {
        let mut batch = tokio::task::JoinSet::new();
        for (account, token) in accounts.iter().zip(tokens) {
            let url = format!("http://{addr}/hooks/{token}/kommo");
            let body = format!(
                "account[id]={}&account[subdomain]=pace&leads[status][0][id]={}\
                 &leads[status][0][status_id]={TRIGGER_STAGE}&leads[status][0][pipeline_id]={PIPELINE}\
                 &leads[status][0][old_status_id]=1",
                account.kommo_id,
                account.lead_id(deal),
            );
            let (http, refused) = (http.clone(), refused.clone());
            batch.spawn(async move {
                let sent = http
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await;
                if !sent.is_ok_and(|r| r.status() == StatusCode::OK) {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while batch.join_next().await.is_some() {}
    }
    Ok(refused.load(Ordering::Relaxed))
}

// ----------------------------------------------------------------------------------------------
// The proxy: latency, and the time each call spent upstream
// ----------------------------------------------------------------------------------------------

/// One exchange the proxy relayed.
#[derive(Debug, Clone)]
struct Call {
    account: usize,
    kommo: bool,
    note: bool,
    status: u16,
    /// When the proxy got the request and when it finished answering it.
    received: Instant,
    answered: Instant,
}

struct Proxy {
    base: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

#[derive(Clone)]
struct Relay {
    http: reqwest::Client,
    kommo: String,
    flutterwave: String,
    by_host: Arc<HashMap<String, usize>>,
    by_key: Arc<HashMap<String, usize>>,
    half: Duration,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Proxy {
    async fn start(
        kommo: &FakeKommo,
        flutterwave: &FakeFlutterwave,
        accounts: &[Account],
        latency: Duration,
    ) -> anyhow::Result<Proxy> {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let relay = Relay {
            http: reqwest::Client::builder().pool_max_idle_per_host(1024).build()?,
            kommo: kommo.base(),
            flutterwave: flutterwave.base(),
            by_host: Arc::new(accounts.iter().enumerate().map(|(i, a)| (a.host.clone(), i)).collect()),
            by_key: Arc::new(accounts.iter().enumerate().map(|(i, a)| (a.secret_key.clone(), i)).collect()),
            half: latency / 2,
            calls: calls.clone(),
        };
        let router = axum::Router::new().fallback(relay_call).with_state(relay);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the proxy")?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Proxy { base, calls })
    }
}

async fn relay_call(
    State(relay): State<Relay>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Instant::now();
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let (target, account, kommo) = if let Some(rest) = path_and_query.strip_prefix("/kommo/") {
        let host = rest.split('/').next().unwrap_or_default();
        (format!("{}/{rest}", relay.kommo), relay.by_host.get(host).copied(), true)
    } else if let Some(rest) = path_and_query.strip_prefix("/flw") {
        let key = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        (format!("{}{rest}", relay.flutterwave), relay.by_key.get(key).copied(), false)
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let note = kommo && method == Method::POST && uri.path().ends_with("/api/v4/leads/notes");
    tokio::time::sleep(relay.half).await;
    let mut request = relay.http.request(method, target).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let (status, answer_headers, answer) = match request.send().await {
        Ok(response) => {
            let status = response.status();
            let answer_headers = response.headers().clone();
            (status, answer_headers, response.bytes().await.unwrap_or_default())
        }
        Err(_) => (StatusCode::BAD_GATEWAY, HeaderMap::new(), Bytes::new()),
    };
    tokio::time::sleep(relay.half).await;
    if let Some(account) = account
        && let Ok(mut calls) = relay.calls.lock()
    {
        calls.push(Call {
            account,
            kommo,
            note,
            status: status.as_u16(),
            received,
            answered: Instant::now(),
        });
    }
    let mut response = (status, answer).into_response();
    for (name, value) in &answer_headers {
        if name == "content-type" || name == "retry-after" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

// ----------------------------------------------------------------------------------------------
// The job timer: each job's wall time and its waits on the rate limiter, from pipepay's spans
// ----------------------------------------------------------------------------------------------

/// A finished job attempt as its spans tell it.
#[derive(Debug, Clone)]
struct JobSpan {
    kommo_account: Option<i64>,
    started: Instant,
    ended: Instant,
    /// Time inside `kommo.rate_limit` spans: waiting for the account's next slot.
    limiter: Duration,
}

#[derive(Clone, Default)]
struct JobLog {
    done: Arc<Mutex<Vec<JobSpan>>>,
    /// Transactions (reads and writes) each job attempt's handler opened, as pipepay's debug
    /// event reports them, with when.
    transactions: Arc<Mutex<Vec<(Instant, u64)>>>,
}

struct TransactionsField(Option<u64>);

impl tracing::field::Visit for TransactionsField {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "transactions" {
            self.0 = Some(value);
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

/// Kept in a `job` span's extensions while it runs.
struct Open {
    kommo_account: Option<i64>,
    started: Instant,
    limiter: Duration,
}

/// Kept in a `kommo.rate_limit` span's extensions.
struct Waiting(Instant);

struct AccountField(Option<i64>);

impl tracing::field::Visit for AccountField {
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if field.name() == "pipepay.kommo.account_id" {
            self.0 = Some(value);
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S> tracing_subscriber::Layer<S> for JobLog
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        match attrs.metadata().name() {
            "job" => {
                let mut field = AccountField(None);
                attrs.record(&mut field);
                span.extensions_mut().insert(Open {
                    kommo_account: field.0,
                    started: Instant::now(),
                    limiter: Duration::ZERO,
                });
            }
            "kommo.rate_limit" => span.extensions_mut().insert(Waiting(Instant::now())),
            _ => {}
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
        if !event.metadata().target().starts_with("pipepay::pipeline") {
            return;
        }
        let mut field = TransactionsField(None);
        event.record(&mut field);
        if let (Some(count), Ok(mut all)) = (field.0, self.transactions.lock()) {
            all.push((Instant::now(), count));
        }
    }

    fn on_close(&self, id: span::Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        match span.name() {
            "kommo.rate_limit" => {
                let Some(waited) = span.extensions().get::<Waiting>().map(|w| w.0.elapsed()) else { return };
                let job = span.scope().skip(1).find(|s| s.name() == "job");
                if let Some(job) = job
                    && let Some(open) = job.extensions_mut().get_mut::<Open>()
                {
                    open.limiter += waited;
                }
            }
            "job" => {
                let Some(open) = span.extensions_mut().remove::<Open>() else { return };
                if let Ok(mut done) = self.done.lock() {
                    done.push(JobSpan {
                        kommo_account: open.kommo_account,
                        started: open.started,
                        ended: Instant::now(),
                        limiter: open.limiter,
                    });
                }
            }
            _ => {}
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Figures
// ----------------------------------------------------------------------------------------------

fn report(
    args: &Args,
    accounts: &[Account],
    kommo: &FakeKommo,
    proxy: &Proxy,
    jobs: &JobLog,
    (from, to): (Instant, Instant),
    cpu: (Option<Duration>, Option<Duration>),
) -> anyhow::Result<()> {
    let calls = proxy.calls.lock().map_err(|_| anyhow::anyhow!("proxy log poisoned"))?.clone();
    let seconds = (to - from).as_secs_f64();
    let inside = |c: &Call| c.received >= from && c.received < to;
    let mut kommo_calls = vec![0u64; accounts.len()];
    let mut pipelines = vec![0u64; accounts.len()];
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    for call in calls.iter().filter(|c| inside(c)) {
        *statuses.entry(call.status).or_default() += 1;
        if call.kommo {
            kommo_calls[call.account] += 1;
            if call.note && call.status == 200 {
                pipelines[call.account] += 1;
            }
        }
    }
    let per_account = |counts: &[u64]| -> Vec<f64> { counts.iter().map(|&n| n as f64 / seconds).collect() };
    let rates = per_account(&kommo_calls);
    let done = per_account(&pipelines);
    let total: u64 = pipelines.iter().sum();
    println!(
        "window: {:.1} s (after {} s of warm-up), {} ms latency per call",
        seconds, args.warmup, args.latency_ms
    );
    println!(
        "pipelines completed (note posted): {total} = {:.1}/s overall; per account {}",
        total as f64 / seconds,
        spread(&done, 2)
    );
    println!("Kommo requests per account per second: {}", spread(&rates, 2));
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    println!(
        "pacing: {mean:.2} of {KOMMO_LIMIT} req/s per account = {:.1}% (lowest account {:.1}%)",
        100.0 * mean / KOMMO_LIMIT,
        100.0 * rates.iter().copied().fold(f64::INFINITY, f64::min) / KOMMO_LIMIT
    );
    let violations: usize = accounts.iter().map(|a| kommo.rate_violations(a.kommo_id)).sum();
    let busiest = accounts.iter().map(|a| kommo.max_requests_per_second(a.kommo_id)).max().unwrap_or(0);
    println!(
        "429s from the Kommo fake: {violations}; most requests any account had in one second: {busiest} \
         (allowed: {KOMMO_LIMIT})"
    );
    let mut others: Vec<String> =
        statuses.iter().filter(|(s, _)| **s != 200).map(|(s, n)| format!("{s}: {n}")).collect();
    others.sort();
    println!(
        "upstream answers other than 200: {}",
        if others.is_empty() { "none".into() } else { others.join(", ") }
    );

    // pipepay's own time per job: its wall time minus what the proxy spent on the account's
    // calls inside it (jobs of one account never overlap) and minus its limiter waits.
    let mut by_account: HashMap<usize, Vec<&Call>> = HashMap::new();
    for call in &calls {
        by_account.entry(call.account).or_default().push(call);
    }
    let index: HashMap<i64, usize> = accounts.iter().enumerate().map(|(i, a)| (a.kommo_id, i)).collect();
    let finished = jobs.done.lock().map_err(|_| anyhow::anyhow!("job log poisoned"))?.clone();
    let mut own = Vec::new();
    let mut limiter = Vec::new();
    let mut walls = Vec::new();
    for job in finished.iter().filter(|j| j.started >= from && j.ended < to) {
        let Some(account) = job.kommo_account.and_then(|id| index.get(&id)) else { continue };
        let upstream: Duration = by_account
            .get(account)
            .map(|calls| {
                calls
                    .iter()
                    .filter(|c| c.received >= job.started && c.answered <= job.ended)
                    .map(|c| c.answered - c.received)
                    .sum()
            })
            .unwrap_or_default();
        let wall = job.ended - job.started;
        own.push(wall.saturating_sub(upstream).saturating_sub(job.limiter).as_secs_f64() * 1000.0);
        limiter.push(job.limiter.as_secs_f64() * 1000.0);
        walls.push(wall.as_secs_f64() * 1000.0);
    }
    println!("jobs finished inside the window: {}", own.len());
    println!("job wall time ms: {}", percentiles(&mut walls));
    println!("  of it waiting for the rate limiter ms: {}", percentiles(&mut limiter));
    println!("pipepay's own time per pipeline ms (wall - upstream - limiter): {}", percentiles(&mut own));
    let counts = jobs.transactions.lock().map_err(|_| anyhow::anyhow!("job log poisoned"))?.clone();
    let mut counts: Vec<f64> =
        counts.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, n)| *n as f64).collect();
    println!(
        "database transactions per job attempt (handler, reads and writes): {}",
        percentiles(&mut counts)
    );
    if let (Some(before), Some(after)) = (cpu.0, cpu.1) {
        let used = after.saturating_sub(before);
        println!(
            "CPU time of this process (pipepay, fakes, proxy) inside the window: {:.2} s of {:.1} s wall, \
             {:.2} ms per completed pipeline",
            used.as_secs_f64(),
            seconds,
            used.as_secs_f64() * 1000.0 / total.max(1) as f64
        );
    }
    Ok(())
}

/// This process's CPU time so far (user + system), from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0)?;
    Some(Duration::from_micros(ticks * 1_000_000 / per_second))
}

/// "mean m (min a, max b)".
fn spread(values: &[f64], decimals: usize) -> String {
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("mean {mean:.decimals$} (min {min:.decimals$}, max {max:.decimals$})")
}

/// "p50 a  p90 b  p99 c  max d", nearest rank.
fn percentiles(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        let Some(last) = values.len().checked_sub(1) else { return 0.0 };
        let rank = (q * values.len() as f64).ceil() as usize;
        values[rank.saturating_sub(1).min(last)]
    };
    format!("p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}", at(0.5), at(0.9), at(0.99), at(1.0))
}

/// This process's resident set (`VmRSS`): pipepay, the fakes and the proxy together.
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}
