//! The test harness: a fresh database per test on either engine, and the real server on port 0.
#![allow(dead_code)]

pub mod agent;
pub mod db;
pub mod process;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use pipepay::app::Application;
use pipepay::cli::Cli;
use pipepay::store::{DatabaseUrl, Db};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use agent::Agent;

use crate::fakes::flutterwave::FakeFlutterwave;
pub use db::{Engine, TestDb};

/// Generates one `#[tokio::test]` per engine for each named `async fn(Engine)`, so every story
/// runs on SQLite always and on PostgreSQL whenever `PIPEPAY_TEST_DATABASE_URL` is set at build
/// time (`build.rs` sets `pg_tests`); without it the PostgreSQL half is reported as ignored.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Engine::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(pg_tests), ignore = "set PIPEPAY_TEST_DATABASE_URL to run on PostgreSQL")]
                async fn $name() {
                    super::$name($crate::support::Engine::Postgres).await
                }
            )*
        }
    };
}

/// Parses settings the way the binary does, from flags only.
pub fn cli(args: &[&str]) -> Cli {
    let mut argv = vec!["pipepay"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => panic!("test settings do not parse: {e}"),
    }
}

/// How many of [`TestApp::start`]'s flags belong to one instance (database, address, master
/// keys, its fake Flutterwave), before the extra ones every instance shares.
const OWN_ARGS: usize = 8;

/// A running pipepay on 127.0.0.1 with a port of its own.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// A second pool onto the same database, to check what the server stored.
    pub db: Db,
    pub test_db: Arc<TestDb>,
    /// The `PIPEPAY_MASTER_KEYS` this server runs with.
    pub master_keys: String,
    /// The flags it was started with, to build a second instance's parts from.
    pub args: Vec<String>,
    /// The running server's own Kommo side (its limiter and refresh locks).
    pub kommo: Arc<pipepay::kommo::Kommo>,
    /// The fake Flutterwave this server talks to.
    pub flw: FakeFlutterwave,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(engine: Engine) -> TestApp {
        Self::spawn_with(engine, &[]).await
    }

    pub async fn spawn_with(engine: Engine, extra: &[&str]) -> TestApp {
        let test_db = Arc::new(TestDb::new(engine).await);
        let keys = pipepay::vault::MasterKeys::generate_entry("test");
        Self::start(test_db, &keys, extra).await
    }

    /// Registers a Flutterwave account at this app's fake, so its keys pass the live check.
    pub fn flutterwave_merchant(&self, secret_key: &str, webhook_hash: &str) {
        self.flw.add_merchant(secret_key, webhook_hash);
    }

    /// Starts pipepay on an existing test database with the given master keys, as a restart or
    /// a second instance would.
    pub async fn start(test_db: Arc<TestDb>, master_keys: &str, extra: &[&str]) -> TestApp {
        log_to_test_output();
        pipepay::install_tls_provider();
        let flw = FakeFlutterwave::start().await;
        let flw_url = flw.base();
        let mut args = vec![
            "--database-url",
            test_db.url.as_str(),
            "--listen",
            "127.0.0.1:0",
            "--master-keys",
            master_keys,
            "--flutterwave-api-url",
            &flw_url,
        ];
        // What `second_instance` leaves out: these are the instance's own, the rest are shared.
        debug_assert_eq!(args.len(), OWN_ARGS);
        args.extend_from_slice(extra);
        let owned_args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let config = cli(&args).config;
        let app = Application::build(config).await.expect("pipepay starts");
        let addr = app.local_addr();
        let kommo = app.state().kommo.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        let url: DatabaseUrl = test_db.url.parse().expect("test url parses");
        let db = Db::connect(&url, 2).await.expect("test pool connects");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        TestApp {
            addr,
            http,
            db,
            test_db,
            master_keys: master_keys.to_owned(),
            args: owned_args,
            kommo,
            flw,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// A second pipepay on this one's database, with the same keys and settings (and a fake
    /// Flutterwave of its own), as another replica behind a load balancer.
    pub async fn second_instance(&self) -> TestApp {
        let shared: Vec<&str> = self.args[OWN_ARGS..].iter().map(String::as_str).collect();
        TestApp::start(self.test_db.clone(), &self.master_keys, &shared).await
    }

    /// pipepay's Kommo side as a second instance would have it: same database, same keys,
    /// its own in-process locks and limiter.
    pub fn kommo_instance(&self) -> pipepay::kommo::Kommo {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let config = cli(&args).config;
        let public = url::Url::parse(&self.url("/")).unwrap();
        let vault = pipepay::vault::Vault::new(self.master_keys.parse().unwrap());
        pipepay::kommo::Kommo::new(&config, &public, self.db.clone(), vault).unwrap()
    }

    /// Waits until this app's queue is settled; see [`queue_settled`].
    pub async fn queue_settled(&self) {
        queue_settled(&self.db).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request reaches pipepay")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stops cleanly");
        }
        self.db.close().await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Waits until the queue has nothing left to do: no job ready to run now, none running. A story
/// checks that "nothing more happened" after this instead of sleeping for a guessed while.
/// Webhooks are stored with their job before pipepay answers, so once a delivery has been
/// answered its work is either counted here or done. Jobs retrying later do not count.
pub async fn queue_settled(db: &Db) {
    const WITHIN: std::time::Duration = std::time::Duration::from_secs(30);
    let started = std::time::Instant::now();
    loop {
        let now = pipepay::clock::now_ms();
        let busy: i64 = pipepay::on_db!(db, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE (state = 'ready' AND run_at <= $1) OR state = 'running'",
        )
        .bind(now)
        .fetch_one(pool)
        .await)
        .expect("count busy jobs");
        if busy == 0 {
            return;
        }
        assert!(started.elapsed() < WITHIN, "the queue did not settle: {busy} jobs ready or running");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Reads a problem+json answer, checking its content type and status on the way.
pub async fn problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(content_type, "application/problem+json", "content type");
    let body: serde_json::Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status, "status inside the problem: {body}");
    assert!(body["title"].is_string(), "problem has a title: {body}");
    body
}

/// With `PIPEPAY_TEST_LOG` set (a tracing filter, e.g. `pipepay=debug`), in-process servers log
/// into the test's captured output.
fn log_to_test_output() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("PIPEPAY_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}
