//! Load on the Flutterwave webhook ingress, repeatable: see BENCHMARKS.md for figures.
//!
//! Starts pipepay in this process on a fresh database (a temporary SQLite file, or a schema of
//! its own in the PostgreSQL named by `--database-url`), seeds client accounts directly through
//! the store and the vault (no Flutterwave is reachable to check keys), then fires signed
//! `charge.completed` webhooks spread over the accounts from keep-alive HTTP/1.1 connections
//! for a fixed time, and checks that every acknowledged webhook was stored. `--ceiling` runs the
//! same generator against a bare axum handler that answers 200: what this machine and this
//! generator can do at all.
//!
//! ```text
//! cargo run --release --example ingress_load -- --duration 10
//! cargo run --release --example ingress_load -- --database-url postgres://postgres@127.0.0.1:5432/test
//! cargo run --release --example ingress_load -- --ceiling
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use pipepay::app::Application;
use pipepay::auth::tokens;
use pipepay::ids::{AgencyId, ClientId};
use pipepay::store::agencies::AgencyRow;
use pipepay::store::clients::ClientRow;
use pipepay::store::{self, Db};
use pipepay::tenants::flutterwave_keys::WEBHOOK_HASH;
use pipepay::tenants::{ClientSettings, secrets};
use pipepay::vault::{MasterKeys, Secret, Vault};
use sqlx::{Connection, Executor, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Client accounts created per transaction while seeding.
const SEED_BATCH: usize = 250;

#[derive(Debug, Parser)]
#[command(about = "Load on pipepay's Flutterwave webhook ingress (see BENCHMARKS.md)")]
struct Args {
    /// Database for pipepay: unset for a temporary SQLite file; a `postgres://` URL gets a fresh
    /// schema of its own, dropped afterwards.
    #[arg(long)]
    database_url: Option<String>,
    /// pipepay's database pool size (PIPEPAY_DATABASE_MAX_CONNECTIONS).
    #[arg(long, default_value_t = 10)]
    database_max_connections: u32,
    /// Client accounts the webhooks are spread over.
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Load a bare axum handler answering 200 instead of pipepay: the ceiling.
    #[arg(long)]
    ceiling: bool,
}

/// What one webhook is sent to and signed with.
struct Account {
    token: String,
    webhook_hash: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.duration == 0 {
        bail!("--connections and --duration must be at least 1");
    }
    pipepay::install_tls_provider();
    if args.ceiling { ceiling(&args).await } else { pipepay(&args).await }
}

async fn ceiling(args: &Args) -> anyhow::Result<()> {
    let router = axum::Router::new()
        .route("/hooks/{token}/flutterwave", axum::routing::post(|_body: axum::body::Bytes| async { "" }));
    let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the ceiling server")?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let accounts: Vec<Account> = (0..args.accounts.max(1))
        .map(|_| Account {
            token: tokens::generate(tokens::INGRESS_PREFIX).0.expose().to_owned(),
            webhook_hash: tokens::generate("").0.expose().to_owned(),
        })
        .collect();
    println!("target: bare axum handler (ceiling), {} connections, {} s", args.connections, args.duration);
    report(&fire(addr, Arc::new(accounts), args).await);
    println!("RSS at the end: {}", rss());
    server.abort();
    Ok(())
}

async fn pipepay(args: &Args) -> anyhow::Result<()> {
    let (database, _guard) = fresh_database(args.database_url.as_deref()).await?;
    let master_keys = MasterKeys::generate_entry("load");
    let pool = args.database_max_connections.to_string();
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
        // Nothing here should reach Flutterwave: the references are not pipepay's links.
        "--flutterwave-api-url",
        "http://127.0.0.1:9",
    ];
    let config = <pipepay::cli::Cli as Parser>::try_parse_from(argv).context("pipepay settings")?.config;
    let app = Application::build(config).await.context("starting pipepay")?;
    let addr = app.local_addr();
    let db = app.state().db.clone();
    let vault = app.state().vault.clone();

    let started = Instant::now();
    let accounts = seed(&db, &vault, args.accounts.max(1)).await.context("seeding client accounts")?;
    println!(
        "target: pipepay on {} ({} pool connections), {} client accounts seeded in {:.1} s",
        db.backend().name(),
        args.database_max_connections,
        accounts.len(),
        started.elapsed().as_secs_f64()
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    println!("RSS idle after seeding: {}", rss());
    println!("load: {} connections, {} s", args.connections, args.duration);
    let outcome = fire(addr, Arc::new(accounts), args).await;
    report(&outcome);
    println!("RSS at the end: {}", rss());

    let stored: i64 = pipepay::on_db!(&db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM inbound_events WHERE source = 'flutterwave'",
    )
    .fetch_one(pool)
    .await)
    .context("counting stored webhooks")?;
    let acknowledged = outcome.statuses.get(&200).copied().unwrap_or(0);
    let _ = stop.send(());
    server.await.context("pipepay task")?.context("pipepay stopping")?;
    println!("stored: {stored} webhooks; acknowledged with 200: {acknowledged}");
    if u64::try_from(stored).ok() != Some(acknowledged) {
        bail!("{acknowledged} webhooks were acknowledged but {stored} are stored");
    }
    println!("check: every acknowledged webhook is stored");
    Ok(())
}

/// Removes what [`fresh_database`] made when the run ends, even on an error.
enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin: String, schema: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Guard::Postgres { admin, schema } = self else { return };
        let (admin, schema) = (admin.clone(), schema.clone());
        // Drop cannot await; a small runtime on its own thread drops the schema.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                    let _ = conn.execute(sqlx::AssertSqlSafe(drop)).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A database nobody else uses: a temporary SQLite file, or a new PostgreSQL schema.
async fn fresh_database(url: Option<&str>) -> anyhow::Result<(String, Guard)> {
    match url {
        None => {
            let dir = tempfile::tempdir().context("temporary folder for SQLite")?;
            let url = format!("sqlite://{}", dir.path().join("pipepay.db").display());
            Ok((url, Guard::Sqlite(dir)))
        }
        Some(admin) if admin.starts_with("postgres") => {
            let mut conn = PgConnection::connect(admin).await.context("connecting to PostgreSQL")?;
            let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let schema = format!("pipepay_load_{secs}_{}", uuid::Uuid::new_v4().simple());
            conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                .await
                .context("creating the load schema")?;
            let _ = conn.close().await;
            let mut url = url::Url::parse(admin).context("the PostgreSQL URL")?;
            url.query_pairs_mut().append_pair("options", &format!("-c search_path={schema}"));
            Ok((url.to_string(), Guard::Postgres { admin: admin.to_owned(), schema }))
        }
        Some(other) => bail!("--database-url must be a postgres:// URL (or unset for SQLite), not {other}"),
    }
}

/// Creates one agency and `n` client accounts, each with an ingress token and a sealed webhook
/// hash, in a few transactions: what `tenants::clients::create` and `flutterwave_keys::set`
/// store, without the audit entries and the key check at Flutterwave.
async fn seed(db: &Db, vault: &Vault, n: usize) -> anyhow::Result<Vec<Account>> {
    let now = pipepay::clock::now_ms();
    let agency = AgencyId::new();
    let mut tx = db.write().await?;
    store::agencies::insert(&mut tx, &AgencyRow { id: agency, name: "load".into(), created_at: now }).await?;
    tx.commit().await?;
    let mut accounts = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(SEED_BATCH) {
        let mut tx = db.write().await?;
        for i in batch {
            let name = format!("load {i}");
            let row = ClientRow {
                id: ClientId::new(),
                agency_id: agency,
                name: name.clone(),
                settings: serde_json::to_string(&ClientSettings::new(&name))?,
                created_at: now,
                updated_at: now,
            };
            let (token, token_hash) = tokens::generate(tokens::INGRESS_PREFIX);
            store::clients::insert(&mut tx, &row, &token_hash).await?;
            store::data_keys::insert(&mut tx, &vault.new_data_key(row.id)?).await?;
            let webhook_hash = Secret::new(tokens::generate("").0.expose().to_owned());
            secrets::put(&mut tx, vault, row.id, WEBHOOK_HASH, &webhook_hash).await?;
            accounts.push(Account {
                token: token.expose().to_owned(),
                webhook_hash: webhook_hash.expose().to_owned(),
            });
        }
        tx.commit().await?;
    }
    Ok(accounts)
}

/// What the connections saw, merged.
#[derive(Default)]
struct Outcome {
    elapsed: Duration,
    /// Microseconds from writing a request to reading its whole answer.
    latencies: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    /// Connections that failed mid-request (each is reopened).
    io_errors: u64,
}

async fn fire(addr: SocketAddr, accounts: Arc<Vec<Account>>, args: &Args) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        tasks.spawn(connection(addr, accounts.clone(), next.clone(), deadline));
    }
    let mut outcome = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        let Ok(part) = done else {
            outcome.io_errors += 1;
            continue;
        };
        outcome.latencies.extend(part.latencies);
        for (status, count) in part.statuses {
            *outcome.statuses.entry(status).or_default() += count;
        }
        outcome.io_errors += part.io_errors;
    }
    outcome.elapsed = started.elapsed();
    outcome
}

/// One keep-alive connection sending webhooks back to back until the deadline. The n-th
/// webhook overall goes to account n mod the number of accounts, with transaction id n, so no
/// two are duplicates.
async fn connection(
    addr: SocketAddr,
    accounts: Arc<Vec<Account>>,
    next: Arc<AtomicU64>,
    deadline: Instant,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < deadline {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let index = usize::try_from(n).unwrap_or(0) % accounts.len();
        let request = webhook(addr, &accounts[index], n);
        if stream.is_none() {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(_) => {
                    outcome.io_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        let sent = Instant::now();
        match exchange(s, &request, &mut buf).await {
            Ok((status, keep_alive)) => {
                let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                outcome.latencies.push(micros);
                *outcome.statuses.entry(status).or_default() += 1;
                if !keep_alive {
                    stream = None;
                }
            }
            Err(_) => {
                outcome.io_errors += 1;
                stream = None;
            }
        }
    }
    outcome
}

/// A v3 `charge.completed` as Flutterwave sends it, signed the v3 way (`verif-hash`). The
/// reference is not a link pipepay issued, so each is stored and recorded but queues no job.
fn webhook(addr: SocketAddr, account: &Account, n: u64) -> Vec<u8> {
    let id = 100_000_000 + n;
    let body = format!(
        r#"{{"event":"charge.completed","data":{{"id":{id},"tx_ref":"load-{n}","flw_ref":"LOAD/FLW{n}","amount":1500.75,"currency":"NGN","charged_amount":1500.75,"status":"successful","payment_type":"card","customer":{{"id":1,"email":"load@example.com"}}}},"event.type":"CARD_TRANSACTION"}}"#
    );
    format!(
        "POST /hooks/{}/flutterwave HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nverif-hash: {}\r\ncontent-length: {}\r\n\r\n{body}",
        account.token,
        account.webhook_hash,
        body.len()
    )
    .into_bytes()
}

/// Writes one request and reads one response (status line, headers, a `content-length` body):
/// the status and whether the connection stays open.
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> anyhow::Result<(u16, bool)> {
    stream.write_all(request).await?;
    buf.clear();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .context("no status line")?;
    let mut length = 0usize;
    let mut keep_alive = true;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().context("bad content-length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked responses are not handled");
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        }
    }
    while buf.len() < head_end + length {
        read_more(stream, buf).await?;
    }
    Ok((status, keep_alive))
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await?;
    if read == 0 {
        bail!("connection closed mid-response");
    }
    buf.extend_from_slice(&chunk[..read]);
    Ok(())
}

fn report(outcome: &Outcome) {
    let mut latencies = outcome.latencies.clone();
    latencies.sort_unstable();
    // Nearest rank: the smallest latency at or above the q-th fraction of requests.
    let at = |q: f64| -> f64 {
        let Some(last) = latencies.len().checked_sub(1) else { return 0.0 };
        let rank = (q * latencies.len() as f64).ceil() as usize;
        f64::from(latencies[rank.saturating_sub(1).min(last)]) / 1000.0
    };
    let total = latencies.len();
    let seconds = outcome.elapsed.as_secs_f64();
    let ok = outcome.statuses.get(&200).copied().unwrap_or(0);
    println!(
        "requests: {total} in {seconds:.2} s = {:.0}/s (200s: {:.0}/s)",
        total as f64 / seconds,
        ok as f64 / seconds
    );
    println!("latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}", at(0.50), at(0.90), at(0.99), at(1.0));
    let others: Vec<String> =
        outcome.statuses.iter().filter(|(s, _)| **s != 200).map(|(s, n)| format!("{s}: {n}")).collect();
    println!(
        "non-200: {}  connection errors: {}",
        if others.is_empty() { "none".to_owned() } else { others.join(", ") },
        outcome.io_errors
    );
}

/// This process's resident set (`VmRSS`): pipepay and the generator together.
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}
