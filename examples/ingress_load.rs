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

#[path = "support/bench_db.rs"]
mod bench_db;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench_db::fresh_database;
use clap::Parser;
use pipepay::app::Application;
use pipepay::auth::tokens;
use pipepay::ids::{AgencyId, ClientId};
use pipepay::ingress::writer::COUNTERS;
use pipepay::store::agencies::AgencyRow;
use pipepay::store::clients::ClientRow;
use pipepay::store::{self, Db};
use pipepay::tenants::flutterwave_keys::WEBHOOK_HASH;
use pipepay::tenants::{ClientSettings, secrets};
use pipepay::vault::{MasterKeys, Secret, Vault};
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
    /// Client accounts seeded.
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    /// Of those, how many the webhooks are spread over (all of them if unset).
    #[arg(long)]
    active: Option<usize>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Load a bare axum handler answering 200 instead of pipepay: the ceiling.
    #[arg(long)]
    ceiling: bool,
    /// Run the ceiling, SQLite and PostgreSQL (`--database-url`, else
    /// `PIPEPAY_TEST_DATABASE_URL`) one after another, each in a process of its own so each
    /// RSS is its own, and print them side by side.
    #[arg(long)]
    all: bool,
}

/// What one webhook is sent to and signed with.
struct Account {
    token: String,
    webhook_hash: String,
}

/// The server binary's allocator (see `src/main.rs`), so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.duration == 0 {
        bail!("--connections and --duration must be at least 1");
    }
    if args.active == Some(0) {
        bail!("--active must be at least 1");
    }
    if args.all {
        return all(&args);
    }
    pipepay::install_tls_provider();
    if args.ceiling { ceiling(&args).await } else { pipepay(&args).await }
}

/// One target's figures, printed by the child as one `figures:` line for `--all` to gather.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Figures {
    target: String,
    per_second: f64,
    p50: f64,
    p99: f64,
    max: f64,
    non_200: u64,
    rss_idle_kb: u64,
    rss_end_kb: u64,
    /// Webhooks per batch and microseconds per batch (inside its transaction, and in COMMIT).
    per_batch: Option<(f64, f64, f64)>,
}

fn all(args: &Args) -> anyhow::Result<()> {
    let postgres = args.database_url.clone().or_else(|| std::env::var("PIPEPAY_TEST_DATABASE_URL").ok());
    let exe = std::env::current_exe().context("this program's path")?;
    let mut common: Vec<String> = vec![
        "--accounts".into(),
        args.accounts.to_string(),
        "--connections".into(),
        args.connections.to_string(),
        "--duration".into(),
        args.duration.to_string(),
        "--database-max-connections".into(),
        args.database_max_connections.to_string(),
    ];
    if let Some(active) = args.active {
        common.extend(["--active".into(), active.to_string()]);
    }
    let mut runs: Vec<(&str, Vec<String>)> =
        vec![("ceiling", vec!["--ceiling".into()]), ("sqlite", Vec::new())];
    match &postgres {
        Some(url) => runs.push(("postgres", vec!["--database-url".into(), url.clone()])),
        None => println!("(no --database-url or PIPEPAY_TEST_DATABASE_URL: PostgreSQL skipped)"),
    }
    let mut table = Vec::new();
    for (name, extra) in runs {
        println!("=== {name}");
        let output = std::process::Command::new(&exe)
            .args(&common)
            .args(&extra)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running the {name} target"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        for line in text.lines().filter(|l| !l.starts_with("figures: ")) {
            println!("{line}");
        }
        if !output.status.success() {
            bail!("the {name} target failed ({})", output.status);
        }
        let figures = text
            .lines()
            .find_map(|l| l.strip_prefix("figures: "))
            .with_context(|| format!("the {name} target printed no figures"))?;
        table.push(serde_json::from_str::<Figures>(figures).context("the figures line")?);
    }
    println!();
    println!(
        "{} accounts ({} active), {} connections, {} s each; load average at the end: {}",
        args.accounts,
        args.active.unwrap_or(args.accounts).min(args.accounts),
        args.connections,
        args.duration,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!(
        "| target | webhooks/s | p50 ms | p99 ms | max ms | non-200 | per batch | µs per batch (commit) | RSS idle -> end |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for f in &table {
        let (size, busy) = match f.per_batch {
            Some((size, busy, commit)) => (format!("{size:.1}"), format!("{busy:.0} ({commit:.0})")),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {size} | {busy} | {:.1} -> {:.1} MB |",
            f.target,
            f.per_second,
            f.p50,
            f.p99,
            f.max,
            f.non_200,
            f.rss_idle_kb as f64 / 1024.0,
            f.rss_end_kb as f64 / 1024.0
        );
    }
    Ok(())
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
    let idle = rss_kb();
    let outcome = fire(addr, Arc::new(accounts), args).await;
    report(&outcome);
    let end = rss_kb();
    println!("RSS idle: {idle} kB; at the end: {end} kB");
    print_figures("ceiling", &outcome, idle, end, None)?;
    server.abort();
    Ok(())
}

async fn pipepay(args: &Args) -> anyhow::Result<()> {
    let (database, _guard) = fresh_database(args.database_url.as_deref(), "pipepay_load").await?;
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
    println!("RSS idle before seeding: {} kB", rss_kb());
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
    // Let start-up and seeding settle before calling the process idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kb();
    println!("RSS idle after seeding: {idle} kB");
    println!("load: {} connections, {} s", args.connections, args.duration);
    let before = COUNTERS.snapshot();
    let outcome = fire(addr, Arc::new(accounts), args).await;
    let after = COUNTERS.snapshot();
    report(&outcome);
    let per_batch = report_writer(before, after, outcome.elapsed);
    let end = rss_kb();
    println!("RSS at the end: {end} kB");

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
    print_figures(db.backend().name(), &outcome, idle, end, per_batch)?;
    Ok(())
}

/// The writer's counters over the load: batches, their sizes, and where their time went.
fn report_writer(before: [u64; 5], after: [u64; 5], elapsed: Duration) -> Option<(f64, f64, f64)> {
    let [batches, webhooks, busy, commit, waited] =
        [0, 1, 2, 3, 4].map(|i| after[i].saturating_sub(before[i]) as f64);
    if batches == 0.0 {
        println!("writer: no batches");
        return None;
    }
    let wall = elapsed.as_secs_f64() * 1e6;
    println!(
        "writer: {batches:.0} batches, {:.1} webhooks per batch; {:.0} µs per batch in its transaction \
         ({:.0} µs in COMMIT, i.e. the fsync); transactions busy {:.0} % of the time, COMMIT {:.0} %; \
         a webhook waited {:.0} µs on average for its batch to start",
        webhooks / batches,
        busy / batches,
        commit / batches,
        100.0 * busy / wall,
        100.0 * commit / wall,
        waited / webhooks.max(1.0)
    );
    Some((webhooks / batches, busy / batches, commit / batches))
}

fn print_figures(
    target: &str,
    outcome: &Outcome,
    rss_idle_kb: u64,
    rss_end_kb: u64,
    per_batch: Option<(f64, f64, f64)>,
) -> anyhow::Result<()> {
    let mut latencies = outcome.latencies.clone();
    latencies.sort_unstable();
    let figures = Figures {
        target: target.to_owned(),
        per_second: outcome.statuses.get(&200).copied().unwrap_or(0) as f64 / outcome.elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: percentile(&latencies, 1.0),
        non_200: outcome.statuses.iter().filter(|(s, _)| **s != 200).map(|(_, n)| n).sum::<u64>()
            + outcome.io_errors,
        rss_idle_kb,
        rss_end_kb,
        per_batch,
    };
    println!("figures: {}", serde_json::to_string(&figures)?);
    Ok(())
}

/// Nearest rank, in milliseconds: the smallest latency at or above the q-th fraction of requests.
fn percentile(sorted: &[u32], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else { return 0.0 };
    let rank = (q * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.saturating_sub(1).min(last)]) / 1000.0
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
    let active = args.active.unwrap_or(accounts.len()).clamp(1, accounts.len().max(1));
    for _ in 0..args.connections {
        tasks.spawn(connection(addr, accounts.clone(), active, next.clone(), deadline));
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
/// webhook overall goes to active account n mod `active` (the active ones spread evenly over
/// all that were seeded), with transaction id n, so no two are duplicates.
async fn connection(
    addr: SocketAddr,
    accounts: Arc<Vec<Account>>,
    active: usize,
    next: Arc<AtomicU64>,
    deadline: Instant,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < deadline {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let index = (usize::try_from(n).unwrap_or(0) % active) * (accounts.len() / active);
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
    let at = |q: f64| percentile(&latencies, q);
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

/// This process's resident set (`VmRSS`, kB): pipepay and the generator together.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
