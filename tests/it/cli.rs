//! The binary as an operator meets it: a fresh machine, bad settings, `--help`.

use clap::CommandFactory;
use pipepay::cli::Cli;

use crate::support::process::{Running, pipepay};
use crate::support::{Engine, TestDb};

#[tokio::test]
async fn the_run_command_works_on_a_fresh_machine_with_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(dir.path(), &[]);
    let ready = reqwest::get(running.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(dir.path().join("data/pipepay.db").is_file(), "the default database is created");
    let first = running.terminate();
    assert!(first.contains("PIPEPAY_MASTER_KEYS is not set"), "development warns about its key: {first}");
    let key_file = dir.path().join("data/master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the development key is readable by its owner only");
    }
    let key = std::fs::read_to_string(&key_file).unwrap();
    let again = Running::start(dir.path(), &[]).terminate();
    assert!(again.contains("PIPEPAY_MASTER_KEYS is not set"), "and warns at every start");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key, "the same key is kept");
}

#[tokio::test]
#[cfg_attr(not(pg_tests), ignore = "set PIPEPAY_TEST_DATABASE_URL to run on PostgreSQL")]
async fn the_same_binary_serves_on_postgres() {
    let db = TestDb::new(Engine::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = pipepay::vault::MasterKeys::generate_entry("ci");
    let running =
        Running::start(dir.path(), &[("PIPEPAY_DATABASE_URL", &db.url), ("PIPEPAY_MASTER_KEYS", &keys)]);
    let ready: serde_json::Value = reqwest::get(running.url("/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(ready["database"], "postgres");
    assert!(!dir.path().join("data").exists(), "nothing written locally on PostgreSQL");
    running.terminate();
}

#[test]
fn the_defaults_are_the_documented_ones() {
    let command = Cli::command();
    let default = |id: &str| {
        let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
        arg.get_default_values()[0].to_string_lossy().into_owned()
    };
    assert_eq!(default("listen"), "127.0.0.1:8080");
    assert_eq!(default("database_url"), "sqlite://data/pipepay.db");
}

#[test]
fn help_documents_every_setting_with_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = pipepay(dir.path(), &[]).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for arg in Cli::command().get_arguments() {
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(env.starts_with("PIPEPAY_"), "{env}");
            assert!(help.contains(&*env), "--help is missing {env}");
        }
    }
    for subcommand in ["serve", "migrate"] {
        assert!(help.contains(subcommand), "--help is missing {subcommand}");
    }
}

#[test]
fn bad_settings_exit_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        ("PIPEPAY_DATABASE_URL", "mysql://root@127.0.0.1/pipepay", &["sqlite://", "postgres://"]),
        ("PIPEPAY_DATABASE_URL", "postgres://pipepay:hunter2@127.0.0.1:1/pipepay", &["refused"]),
        ("PIPEPAY_LISTEN", "localhost-8080", &["socket address"]),
        ("PIPEPAY_PUBLIC_URL", "ftp://pay.example.com", &["http"]),
        ("PIPEPAY_LOG_FORMAT", "xml", &["human", "json"]),
        ("PIPEPAY_BODY_LIMIT", "lots", &["invalid"]),
        ("PIPEPAY_MASTER_KEYS", "k1:c2VjcmV0LWJ1dC10b28tc2hvcnQ=", &["32 bytes"]),
        ("PIPEPAY_ENV", "staging", &["development", "production"]),
    ];
    for (setting, value, hints) in cases {
        let output = pipepay(dir.path(), &[(setting, value)]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!output.status.success(), "{setting}={value} must fail");
        assert_eq!(lines.len(), 1, "{setting}={value}: one line, got {stderr:?}");
        assert!(lines[0].contains(setting), "{setting}={value}: names the setting: {stderr}");
        for hint in *hints {
            assert!(lines[0].contains(hint), "{setting}={value}: says {hint:?}: {stderr}");
        }
        assert!(!stderr.contains("panicked") && !stderr.contains("hunter2"), "{stderr}");
        assert!(!stderr.contains("c2VjcmV0"), "key material is never echoed: {stderr}");
    }
    assert!(!dir.path().join("data").exists(), "nothing is created when settings are bad");
}

#[test]
fn migrate_applies_migrations_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let status = pipepay(dir.path(), &[]).arg("migrate").status().unwrap();
    assert!(status.success());
    assert!(dir.path().join("data/pipepay.db").is_file());
}

#[test]
fn production_refuses_to_start_without_master_keys() {
    let dir = tempfile::tempdir().unwrap();
    let output = pipepay(dir.path(), &[("PIPEPAY_ENV", "production")]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("PIPEPAY_MASTER_KEYS") && stderr.contains("production"), "{stderr}");
    assert!(!dir.path().join("data/master.key").exists(), "no development key in production");
}

#[test]
fn keys_generate_prints_a_usable_entry() {
    let dir = tempfile::tempdir().unwrap();
    let output = pipepay(dir.path(), &[]).args(["keys", "generate", "--id", "k2027"]).output().unwrap();
    assert!(output.status.success());
    let entry = String::from_utf8(output.stdout).unwrap();
    let keys: pipepay::vault::MasterKeys = entry.trim().parse().unwrap();
    assert_eq!(keys.active().id, "k2027");
}

#[tokio::test]
async fn the_container_health_check_asks_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(dir.path(), &[]);
    // The image's HEALTHCHECK: the same binary, the same PIPEPAY_LISTEN, no curl.
    for check in [&["healthcheck"][..], &["healthcheck", "--ready"][..]] {
        let output = pipepay(dir.path(), &[("PIPEPAY_LISTEN", &running.addr)]).args(check).output().unwrap();
        assert!(output.status.success(), "{check:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let port = running.addr.rsplit(':').next().unwrap().to_owned();
    running.terminate();
    // Listening on all interfaces is checked on loopback; nobody there is a failure.
    let output = pipepay(dir.path(), &[("PIPEPAY_LISTEN", &format!("0.0.0.0:{port}"))])
        .arg("healthcheck")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("http://127.0.0.1:{port}/healthz")));
}
